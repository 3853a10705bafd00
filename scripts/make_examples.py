"""Regenerate the example datasets bundled with `tunesmith init` and `tunesmith quickstart`.

- classification: part of banking77 (PolyAI, CC BY 4.0) read from ../shared/data/banking77.
- qa, summarization, generation: synthetic sets written from templates by this script (fictional
  banks), so they carry no third-party rights. Each is large enough for a test split of 30 or more
  examples (`eval.min_test_examples`), so the example run can reach a verdict; the values in the
  qa passages are drawn at random, so answers must be read from the passage, not remembered.

Usage: python scripts/make_examples.py [--banking77 DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "templates"

#: Eight intents of banking77 that a customer-support team would route differently.
INTENTS = ["card_arrival", "lost_or_stolen_phone", "exchange_rate", "pin_blocked",
           "age_limit", "apple_pay_or_google_pay", "terminate_account", "cancel_transfer"]
PER_INTENT = 100


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def banking77(src: Path) -> list[dict]:
    by_label: dict[str, list[str]] = defaultdict(list)
    with (src / "train.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["category"] in INTENTS:
                by_label[row["category"]].append(row["text"].strip())
    rng = random.Random(77)
    rows = []
    for label in INTENTS:
        texts = sorted(set(by_label[label]))
        rng.shuffle(texts)
        rows += [{"text": t, "label": label} for t in texts[:PER_INTENT]]
    rng.shuffle(rows)
    return rows


# Each fact template: (sentence, question, answer) with slots filled at random per passage, so that
# answers must be read from the passage (the same question has a different answer elsewhere).
FACT_TEMPLATES = [
    ("The monthly fee for the {product} account is {fee} euros.", "How much is the monthly fee for the {product} account?", "{fee} euros"),
    ("{product} cards are delivered within {days} working days of ordering.", "How long does delivery of a {product} card take?", "{days} working days"),
    ("Customers must be at least {age} years old to open a {product} account.", "What is the minimum age for a {product} account?", "{age} years old"),
    ("The daily cash withdrawal limit of {product} is {limit} euros.", "What is the daily cash withdrawal limit of {product}?", "{limit} euros"),
    ("{product} support answers chats from {start} to {stop} every day.", "When does {product} support answer chats?", "from {start} to {stop} every day"),
    ("{product} savings pay {rate} percent interest a year.", "What interest do {product} savings pay?", "{rate} percent a year"),
    ("A replacement {product} card costs {fee} euros.", "How much does a replacement {product} card cost?", "{fee} euros"),
    ("{product} refunds usually appear within {days} working days.", "When do {product} refunds usually appear?", "within {days} working days"),
    ("The {product} app is available in {languages}.", "In which languages is the {product} app available?", "{languages}"),
    ("A {product} joint account can have at most {holders} holders.", "How many holders can a {product} joint account have?", "{holders}"),
    ("Direct debits from {product} are collected at {start} on the due date.", "At what time are {product} direct debits collected?", "{start}"),
    ("Lost {product} cards should be reported by calling {phone}.", "Which number should be called to report a lost {product} card?", "{phone}"),
    ("{product} statements can be downloaded as {formats} files.", "In which formats can {product} statements be downloaded?", "{formats}"),
    ("Contactless payments with {product} are limited to {limit} euros each.", "What is the limit of each contactless payment with {product}?", "{limit} euros"),
    ("The {product} referral bonus is {fee} euros for each invited friend.", "How much is the {product} referral bonus?", "{fee} euros"),
    ("{product} exchange rates are updated every {minutes} minutes.", "How often are {product} exchange rates updated?", "every {minutes} minutes"),
    ("{product} card payments abroad are free up to {limit} euros a month.", "Up to what amount are {product} card payments abroad free each month?", "{limit} euros a month"),
    ("Cash deposits for {product} are accepted at {place}.", "Where are cash deposits for {product} accepted?", "at {place}"),
]
QA_PRODUCTS = ["Northwind Plus", "Northwind Metal", "Harbor Basic", "Summit Premium", "Meadow Junior", "Atlas Business",
               "Cobalt Student", "Juniper Family", "Lumen Travel", "Beacon Saver", "Orchard Gold", "Willow Free"]
LANGUAGES = ["English and French", "German and Italian", "Spanish and Portuguese", "Dutch, French and German",
             "English, Polish and Czech", "Swedish and Finnish"]
FORMATS = ["PDF or CSV", "PDF", "CSV or Excel", "PDF, CSV or OFX"]
PLACES = ["partner post offices", "any branch", "partner supermarkets", "selected petrol stations"]
HOURS = ["6am", "7am", "8am", "9am"], ["6pm", "8pm", "10pm", "11pm"]


def _fill(rng: random.Random, product: str) -> dict[str, str]:
    return {"product": product, "fee": str(rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 12, 15])),
            "days": rng.choice(["two", "three", "four", "five", "seven", "ten"]), "age": str(rng.choice([16, 17, 18, 21])),
            "limit": rng.choice(["200", "300", "500", "750", "1,000", "1,500", "2,000"]),
            "start": rng.choice(HOURS[0]), "stop": rng.choice(HOURS[1]), "rate": rng.choice(["1.2", "1.8", "2.1", "2.5", "3.0"]),
            "languages": rng.choice(LANGUAGES), "holders": rng.choice(["two", "three", "four"]),
            "phone": f"0800 {rng.randint(100, 999)} {rng.randint(100, 999)}", "formats": rng.choice(FORMATS),
            "minutes": rng.choice(["5", "10", "15", "30", "60"]), "place": rng.choice(PLACES)}


def qa_rows(passages: int = 180) -> list[dict]:
    """SQuAD-style rows: each passage states three facts about a product; two questions are asked about it."""
    rng = random.Random(3)
    rows = []
    for _ in range(passages):
        product = rng.choice(QA_PRODUCTS)
        facts = rng.sample(FACT_TEMPLATES, 3)
        fill = _fill(rng, product)
        context = " ".join(f[0].format(**fill) for f in facts)
        for sentence, question, answer in rng.sample(facts, 2):
            rows.append({"context": context, "question": question.format(**fill), "answer": answer.format(**fill)})
    rng.shuffle(rows)
    return rows


NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena", "Mateo",
         "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Ursula", "Viktor", "Wen", "Ximena", "Yusuf",
         "Zofia", "Amir", "Bianca", "Carlos", "Dagny", "Emeka", "Fatima", "Gustav", "Hana", "Ivo", "Jana", "Kofi",
         "Leila", "Marek", "Noor"]
PROBLEMS = [
    ("card", "my new card still has not arrived", "has not received a new card", "resent the card by express post"),
    ("transfer", "a transfer I sent on Monday has not reached my landlord", "reports a transfer that has not arrived", "traced the transfer and confirmed it will arrive tomorrow"),
    ("pin", "my PIN got blocked after three wrong tries", "has a blocked PIN", "explained how to unblock it at a cash machine"),
    ("fee", "I was charged a fee for a card payment abroad", "was charged a fee abroad", "refunded the fee as a goodwill gesture"),
    ("app", "the app logs me out every time I open it", "keeps being logged out of the app", "asked the customer to update the app, which fixed it"),
    ("refund", "the shop says it refunded me but I see nothing", "cannot see a refund from a shop", "confirmed the refund is pending and will show in three days"),
    ("address", "I moved house and cannot change my address in the app", "cannot change their address", "updated the address after an identity check"),
    ("limit", "my card was declined because of a spending limit", "had a card declined by a spending limit", "raised the daily limit to 1,000 euros"),
    ("statement", "I need a statement for my visa application", "needs a statement for a visa", "sent a stamped PDF statement by e-mail"),
    ("fraud", "there are two payments I do not recognise", "reports two unknown payments", "froze the card and opened a fraud case"),
]


OPENERS = ["Customer {name} wrote to support", "{name} opened a chat in the app", "A message came in from {name}",
           "{name} called the help line", "In an e-mail, {name} told us"]
CONTEXT = ["I have been waiting {days} days and I need this sorted.", "This is urgent because I travel on {day}.",
           "My partner had the same problem last month.", "I tried the app twice before writing.",
           "Nobody answered my first message.", "I am a customer since {year}."]
CHECKS = ["The agent checked the account history and", "After looking at the logs, the agent",
          "Our colleague {agent} verified the details and", "Support reviewed the case and"]
CLOSERS = ["{name} thanked the agent and the ticket was closed.", "The case was marked as solved.",
           "{name} said they would write again if needed.", "A satisfaction survey was sent afterwards.",
           "The ticket stays open for 48 hours in case of follow-up."]


def summarization_rows() -> list[dict]:
    rng = random.Random(5)
    rows = []
    for name in NAMES:
        for _, said, summary_issue, action in rng.sample(PROBLEMS, 8):
            fill = {"name": name, "days": rng.choice(["two", "three", "five", "ten"]),
                    "day": rng.choice(["Monday", "Friday", "Sunday"]), "year": rng.choice(["2019", "2021", "2023"]),
                    "agent": rng.choice(["Sam", "Priya", "Tom", "Yuki"])}
            context = " ".join(c.format(**fill) for c in rng.sample(CONTEXT, 2))
            doc = (f"{rng.choice(OPENERS).format(**fill)}: \"Hello, {said}. {context}\" "
                   f"{rng.choice(CHECKS).format(**fill)} {action}. {rng.choice(CLOSERS).format(**fill)}")
            rows.append({"document": doc, "summary": f"{name} {summary_issue}; the agent {action}."})
    rng.shuffle(rows)
    return rows


BRANDS = ["Northwind", "Harbor", "Summit", "Meadow", "Atlas", "Cobalt", "Juniper", "Lumen", "Beacon", "Orchard",
          "Willow", "Granite", "Aurora", "Falcon", "Maple", "Coral", "Ember", "Glacier", "Heron", "Saffron"]
KINDS = ["Plus", "Metal", "Vault", "Flex", "Joint", "Business", "Junior", "Travel", "Premier", "Student", "Family",
         "Green", "Basic", "Select", "One", "Pro"]
FEATURES = [
    "a {fee} euro monthly fee", "free transfers in euros", "travel insurance for the whole family",
    "airport lounge access twice a year", "{rate} percent cashback on groceries", "{rate} percent interest a year",
    "virtual cards for online shopping", "instant notifications for every payment", "a card made of recycled plastic",
    "up to {holders} holders with separate cards", "invoicing tools for small companies", "parental controls in the app",
    "rates updated every {minutes} minutes", "no fees abroad up to {limit} euros a month", "a dedicated phone line",
    "round-ups that save the change", "bill splitting between friends", "savings goals with reminders",
    "a metal card with your initials", "free cash withdrawals worldwide", "support in {languages}",
    "monthly statements as {formats}", "a {days}-day free trial", "budget reports every Sunday",
    "overdraft protection up to {limit} euros", "contactless payments with a ring", "crypto trading with low fees",
    "a welcome bonus of {fee} euros", "insurance for phones and laptops", "priority chat from {start}",
]
STYLES = ["friendly", "formal", "short", "enthusiastic"]


def generation_rows() -> list[dict]:
    """Product descriptions in four house styles: 320 products with their own features, each in one style
    (a test product is never one seen in training in another style)."""
    rng = random.Random(9)
    rows = []
    for brand in BRANDS:
        for kind in KINDS:
            product = f"{brand} {kind}"
            fill = _fill(rng, product)
            first, second, third = (f.format(**fill) for f in rng.sample(FEATURES, 3))
            features = f"{first}, {second} and {third}"
            for style in [STYLES[len(rows) % len(STYLES)]]:
                prompt = f"Write a {style} one-sentence description of {product}, which has {features}."
                if style == "short":
                    response = f"{product}: {features}."
                elif style == "enthusiastic":
                    response = f"Say hello to {product}, with {features}!"
                elif style == "friendly":
                    response = f"Meet {product}: it comes with {features}."
                else:
                    response = f"We are pleased to offer {product}, which includes {features}."
                rows.append({"prompt": prompt, "response": response})
    rng.shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--banking77", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77")
    args = ap.parse_args()
    write_jsonl(OUT / "classification" / "train.jsonl", banking77(args.banking77))
    write_jsonl(OUT / "qa" / "train.jsonl", qa_rows())
    write_jsonl(OUT / "summarization" / "train.jsonl", summarization_rows())
    write_jsonl(OUT / "generation" / "train.jsonl", generation_rows())
    for task in ("classification", "qa", "summarization", "generation"):
        n = sum(1 for _ in (OUT / task / "train.jsonl").open())
        print(f"{task}: {n} rows")


if __name__ == "__main__":
    main()
