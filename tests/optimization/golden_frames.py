"""Small golden-dataset frames in the golden_dataset asset's contract, for optimization tests."""

from __future__ import annotations

import pandas as pd

TOPICS = [
    ("How do I get a refund for my last invoice?", "Open Billing and pick the invoice", "Click Request refund and confirm"),
    ("I forgot my password, how can I reset it?", "Open the login page and click Forgot password", "Follow the link we email you"),
    ("How can I change the email on my account?", "Open Settings and choose Profile", "Enter the new email and verify it"),
    ("My export to CSV fails, what should I do?", "Open Reports and choose Export again", "Pick a smaller date range if it still fails"),
    ("How do I add a teammate to my workspace?", "Open Settings and choose Members", "Click Invite and enter their email"),
    ("Can I cancel my subscription online?", "Open Billing and choose Plan", "Click Cancel plan and confirm"),
    ("How do I turn on two-factor login?", "Open Settings and choose Security", "Scan the code with your authenticator app"),
    ("Where can I download my invoices?", "Open Billing and choose History", "Click Download next to each invoice"),
    ("How do I change my billing address?", "Open Billing and choose Details", "Edit the address and save it"),
    ("The app is slow to load, what can I do?", "Clear your browser cache", "Try again on a fresh tab and tell us if it persists"),
    ("How do I delete an old project?", "Open the project and choose Settings", "Click Delete project and confirm"),
    ("Can I change my username?", "Open Settings and choose Profile", "Edit the username and save it"),
]


def liked_reply(step_one: str, step_two: str) -> str:
    return f"Good news: this is quick to fix.\n1. {step_one}.\n2. {step_two}.\nReply here if you get stuck."


def disliked_reply(question: str) -> str:
    return "That is in the docs somewhere."


def golden_frame(n_train: int = 8, n_validation: int = 4, *, disliked_every: int = 4) -> pd.DataFrame:
    """``n_train + n_validation`` rows; every ``disliked_every``-th one carries a poorly rated reply."""
    rows = []
    total = n_train + n_validation
    for i in range(total):
        question, one, two = TOPICS[i % len(TOPICS)]
        disliked = disliked_every and i % disliked_every == disliked_every - 1
        rows.append(
            {
                "id": f"t{i}",
                "user_input": question,
                "agent_output": disliked_reply(question) if disliked else liked_reply(one, two),
                "feedback_score": 0.0 if disliked else 1.0 if i % 2 == 0 else 0.75,
                "feedback_type": "rating",
                "split": "train" if i < n_train else "validation",
                "context_id": f"c{i}",
                "prompt_id": "p-active",
            }
        )
    return pd.DataFrame(rows)
