"""What the demo agents talk about: their code prompts and the topics their users ask about.

Good replies share a recognisable style (numbered steps, concrete, a closing offer); poor replies
are vague or rambling. Users rate accordingly, which is the signal the optimizer learns from.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    subject: str
    steps: tuple[str, str, str]
    follow_up: str


@dataclass(frozen=True)
class DemoAgent:
    agent_id: str
    code_prompt: str
    topics: tuple[Topic, ...]


QUESTION_TEMPLATES = (
    "How do I {subject}?",
    "Can you help me {subject}?",
    "What's the best way to {subject}?",
    "I need to {subject}. What should I do?",
    "hi, quick question: how can I {subject}",
)

VAGUE_REPLIES = (
    "You can probably find that somewhere in the settings.",
    "That depends on a lot of things, it's hard to say.",
    "Please check the documentation for more information.",
    "I'm not sure, maybe try again later?",
)

AGENTS = (
    DemoAgent(
        agent_id="support-bot",
        code_prompt="You are the support assistant for Acme Cloud. Answer customer questions.",
        topics=(
            Topic("reset my password", ("Open the sign-in page and choose 'Forgot password'", "Enter your account email and open the link we send", "Pick a new password of at least 12 characters"), "the reset email never arrives"),
            Topic("get a refund for a double charge", ("Open Billing > Invoices and find the duplicate charge", "Click 'Request refund' and pick 'Charged twice'", "The refund reaches your card within 5 business days"), "I was charged three times"),
            Topic("export all my project data", ("Go to Settings > Data export", "Choose JSON or CSV and the projects to include", "We email a download link when the archive is ready"), "the export is larger than 2 GB"),
            Topic("invite teammates to my workspace", ("Open Workspace > Members", "Click 'Invite' and enter their email addresses", "Pick a role (Viewer, Editor or Admin) and send"), "they never got the invite"),
            Topic("raise my API rate limit", ("Check your current limit under Settings > API", "Upgrade to the Team plan for 10x the requests", "Or contact sales for a custom limit"), "I only need it for one day"),
            Topic("turn on two-factor authentication", ("Open Settings > Security", "Scan the QR code with an authenticator app", "Save the recovery codes somewhere safe"), "I lost my phone"),
            Topic("cancel my subscription", ("Open Billing > Plan", "Click 'Cancel plan' and confirm", "You keep access until the end of the paid period"), "I want my data deleted too"),
            Topic("change the email on my account", ("Open Settings > Profile", "Enter the new email and confirm with your password", "Click the link we send to the new address"), "I no longer have the old inbox"),
        ),
    ),
    DemoAgent(
        agent_id="travel-planner",
        code_prompt="You are a travel planning assistant. Help users plan trips.",
        topics=(
            Topic("plan a weekend in Lisbon", ("Day 1: Alfama, the castle and a fado dinner", "Day 2: Belem tower and pasteis de nata", "Use a Viva Viagem card for trams and metro"), "it rains all weekend"),
            Topic("pack for a week in Iceland", ("Pack layers: thermal base, fleece, waterproof shell", "Bring waterproof boots and a swimsuit for hot springs", "Add a power bank: cold drains phone batteries"), "I'm going in winter"),
            Topic("get a tourist visa for Japan", ("Check if your passport is visa-exempt for 90 days", "If not, apply at the Japanese embassy with your itinerary", "Apply at least 4 weeks before you fly"), "I have a layover in Tokyo only"),
            Topic("find cheap flights to Europe", ("Search with flexible dates and nearby airports", "Book 6 to 10 weeks ahead for the best fares", "Set price alerts and fly midweek"), "I'm travelling with kids"),
            Topic("spend a rainy day in London", ("Visit the British Museum and the Tate Modern (both free)", "Have lunch in Borough Market", "See a West End matinee"), "I'm on a tight budget"),
            Topic("plan a family trip to Rome", ("Book Colosseum tickets online to skip the queue", "Keep afternoons short: rest after lunch", "Try gelato tasting as a reward stop"), "my kids are toddlers"),
            Topic("choose between train and plane from Paris to Amsterdam", ("The train takes about 3h20 city centre to city centre", "Flying is 1h15 plus airport time", "Book the train 3 months ahead for the cheapest seats"), "I have a lot of luggage"),
            Topic("budget a week in Bangkok", ("Hostels cost 10-20 USD, mid-range hotels 40-70 USD a night", "Street food meals cost 2-4 USD", "Use the BTS Skytrain and river boats to get around"), "I want a few nice dinners"),
        ),
    ),
    DemoAgent(
        agent_id="recipe-helper",
        code_prompt="You are a cooking assistant. Answer questions about recipes.",
        topics=(
            Topic("make a quick weeknight pasta", ("Boil salted water and cook 200 g spaghetti", "Fry garlic in olive oil, add chilli and cherry tomatoes", "Toss with pasta water and parmesan"), "I have no tomatoes"),
            Topic("get enough protein on a vegan diet", ("Eat lentils, chickpeas or tofu at every meal", "Add seeds and nuts to breakfast", "Try seitan or tempeh twice a week"), "I'm allergic to soy"),
            Topic("bake bread without yeast", ("Mix 500 g flour, 1 tsp baking soda and 400 ml buttermilk", "Shape a round loaf and score a cross", "Bake 40 minutes at 200 C"), "I have no buttermilk"),
            Topic("meal prep for the week", ("Cook two grains and two proteins on Sunday", "Roast a tray of mixed vegetables", "Store in portions and add fresh sauce each day"), "I get bored of the same food"),
            Topic("substitute eggs in baking", ("Use 1 tbsp ground flax plus 3 tbsp water per egg", "Or 60 g apple sauce per egg in cakes", "Add 1/2 tsp baking powder for lift"), "it's for meringue"),
            Topic("make a quick healthy breakfast", ("Overnight oats: oats, milk, yoghurt and berries", "Or eggs scrambled with spinach on toast", "Prepare three jars at once"), "I don't eat dairy"),
            Topic("bake a gluten-free dessert", ("Make a flourless chocolate cake with almond flour", "Whisk eggs and sugar until pale for lift", "Bake 25 minutes at 180 C"), "I also avoid nuts"),
            Topic("make soup from leftovers", ("Saute onion and garlic", "Add chopped leftovers and cover with stock", "Simmer 20 minutes and blend half"), "the leftovers are roasted meat"),
        ),
    ),
)


def good_reply(topic: Topic) -> str:
    steps = "\n".join(f"{number}. {step}." for number, step in enumerate(topic.steps, start=1))
    return f"Here's how to {topic.subject}:\n{steps}\nAnything else I can help with?"


def rambling_reply(topic: Topic) -> str:
    joined = ", and then ".join(step[0].lower() + step[1:] for step in topic.steps)
    return (
        f"Well, there are many ways people {topic.subject} and it really varies, but generally speaking "
        f"you could {joined}, although your situation might be different so it is hard to be sure."
    )


def follow_up_reply(topic: Topic) -> str:
    return f"If {topic.follow_up}:\n1. Tell me a bit more about your situation.\n2. I'll adjust the plan for you.\nAnything else I can help with?"


def agent_named(agent_id: str) -> DemoAgent:
    for agent in AGENTS:
        if agent.agent_id == agent_id:
            return agent
    raise LookupError(f"no demo agent {agent_id!r}; demo agents are {', '.join(a.agent_id for a in AGENTS)}")
