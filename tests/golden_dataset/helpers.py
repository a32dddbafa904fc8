"""Hand-written A2A/Bindu messages for the golden dataset tests."""


def msg(role, *texts, extra_parts=()):
    parts = [{"kind": "text", "text": t} for t in texts] + list(extra_parts)
    return {"kind": "message", "role": role, "parts": parts}


def user(*texts):
    return msg("user", *texts)


def agent(*texts):
    return msg("assistant", *texts)


def conversation(*pairs):
    """History from (user text, agent text) pairs."""
    history = []
    for u, a in pairs:
        history += [user(u), agent(a)]
    return history
