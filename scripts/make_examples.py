"""Regenerate the example datasets bundled with `tunesmith init` and `tunesmith quickstart`.

- classification: part of banking77 (PolyAI, CC BY 4.0) read from ../shared/data/banking77.
- qa, summarization, generation: small synthetic sets written from templates by this script
  (fictional bank "Northwind"), so they carry no third-party rights.

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


FACTS = [
    ("The monthly fee for the Northwind Plus account is 4 euros.", "How much is the monthly fee for the Northwind Plus account?", "4 euros"),
    ("Cards are delivered within 7 working days of ordering.", "How long does card delivery take?", "7 working days"),
    ("Customers must be at least 16 years old to open an account.", "What is the minimum age to open an account?", "16 years old"),
    ("A blocked PIN can be unblocked at any cash machine after 24 hours.", "When can a blocked PIN be unblocked?", "after 24 hours"),
    ("International transfers to the euro zone are free of charge.", "What do transfers to the euro zone cost?", "free of charge"),
    ("The daily cash withdrawal limit is 500 euros.", "What is the daily cash withdrawal limit?", "500 euros"),
    ("Top-ups by bank transfer arrive within two working days.", "How long do top-ups by bank transfer take?", "two working days"),
    ("Support is available by chat from 8am to 10pm every day.", "When is chat support available?", "from 8am to 10pm every day"),
    ("Disposable virtual cards can be used for one payment only.", "How many payments can a disposable virtual card make?", "one payment"),
    ("Exchange rates are updated every 15 minutes on weekdays.", "How often are exchange rates updated on weekdays?", "every 15 minutes"),
    ("The Northwind Metal card is made of stainless steel.", "What is the Northwind Metal card made of?", "stainless steel"),
    ("Accounts can be closed in the app under Settings, Close account.", "Where can an account be closed?", "in the app under Settings, Close account"),
    ("Transfers can be cancelled while their status is pending.", "When can a transfer be cancelled?", "while their status is pending"),
    ("A replacement card costs 6 euros.", "How much does a replacement card cost?", "6 euros"),
    ("Savings vaults pay 2.1 percent interest a year.", "What interest do savings vaults pay?", "2.1 percent a year"),
    ("Identity checks need a passport or a national identity card.", "Which documents do identity checks need?", "a passport or a national identity card"),
    ("Cash deposits are accepted at partner post offices.", "Where are cash deposits accepted?", "at partner post offices"),
    ("Apple Pay and Google Pay are supported for all card types.", "Which card types support Apple Pay and Google Pay?", "all card types"),
    ("Card payments abroad carry no fee up to 1,000 euros a month.", "Up to what amount are card payments abroad free each month?", "1,000 euros"),
    ("Refunds usually appear within 5 working days.", "When do refunds usually appear?", "within 5 working days"),
    ("The app supports English, French, German and Spanish.", "Which languages does the app support?", "English, French, German and Spanish"),
    ("Joint accounts can have at most two holders.", "How many holders can a joint account have?", "two"),
    ("Direct debits are collected at 6am on the due date.", "At what time are direct debits collected?", "6am"),
    ("Lost phones should be reported by calling 0800 123 456.", "Which number should be called to report a lost phone?", "0800 123 456"),
    ("Business accounts are available to companies registered in the EU.", "Which companies can open business accounts?", "companies registered in the EU"),
    ("Statements can be downloaded as PDF or CSV files.", "In which formats can statements be downloaded?", "PDF or CSV"),
    ("Contactless payments are limited to 50 euros each.", "What is the limit for each contactless payment?", "50 euros"),
    ("Premium customers get free travel insurance.", "Which customers get free travel insurance?", "Premium customers"),
    ("Cheques are not accepted by Northwind.", "Does Northwind accept cheques?", "no"),
    ("The referral bonus is 20 euros for each invited friend.", "How much is the referral bonus?", "20 euros"),
]


def qa_rows() -> list[dict]:
    rng = random.Random(3)
    rows = []
    for i, (fact, q, a) in enumerate(FACTS):
        for variant in range(2):
            others = [f for j, (f, _, _) in enumerate(FACTS) if j != i]
            ctx = [fact, *rng.sample(others, 2)]
            rng.shuffle(ctx)
            question = q if variant == 0 else q[0].lower() + q[1:]
            if variant == 1:
                question = "Quick question: " + question
            rows.append({"context": " ".join(ctx), "question": question, "answer": a})
    rng.shuffle(rows)
    return rows


NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena"]
PROBLEMS = [
    ("card", "my new card still has not arrived", "has not received a new card", "resent the card by express post"),
    ("transfer", "a transfer I sent on Monday has not reached my landlord", "reports a transfer that has not arrived", "traced the transfer and confirmed it will arrive tomorrow"),
    ("pin", "my PIN got blocked after three wrong tries", "has a blocked PIN", "explained how to unblock it at a cash machine"),
    ("fee", "I was charged a fee for a card payment abroad", "was charged a fee abroad", "refunded the fee as a goodwill gesture"),
    ("app", "the app logs me out every time I open it", "keeps being logged out of the app", "asked the customer to update the app, which fixed it"),
    ("refund", "the shop says it refunded me but I see nothing", "cannot see a refund from a shop", "confirmed the refund is pending and will show in three days"),
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
        for _, said, summary_issue, action in rng.sample(PROBLEMS, 5):
            fill = {"name": name, "days": rng.choice(["two", "three", "five", "ten"]),
                    "day": rng.choice(["Monday", "Friday", "Sunday"]), "year": rng.choice(["2019", "2021", "2023"]),
                    "agent": rng.choice(["Sam", "Priya", "Tom", "Yuki"])}
            context = " ".join(c.format(**fill) for c in rng.sample(CONTEXT, 2))
            doc = (f"{rng.choice(OPENERS).format(**fill)}: \"Hello, {said}. {context}\" "
                   f"{rng.choice(CHECKS).format(**fill)} {action}. {rng.choice(CLOSERS).format(**fill)}")
            rows.append({"document": doc, "summary": f"{name} {summary_issue}; the agent {action}."})
    rng.shuffle(rows)
    return rows


PRODUCTS = [
    ("Northwind Plus", "a current account with a 4 euro monthly fee, free transfers and travel insurance"),
    ("Northwind Metal", "a stainless-steel card with airport lounge access"),
    ("Savings Vault", "a savings pot paying 2.1 percent a year"),
    ("Disposable Card", "a virtual card that works for a single payment"),
    ("Joint Account", "an account shared by two holders with separate cards"),
    ("Business Account", "an account for EU companies with invoicing tools"),
    ("Junior Account", "an account for teenagers aged 16 and 17 with parental controls"),
    ("Travel Wallet", "multi-currency balances with rates updated every 15 minutes"),
    ("Round-ups", "a feature that rounds card payments up and saves the change"),
    ("Bill Splitter", "a tool that splits a payment between friends in the app"),
]
STYLES = ["friendly", "formal", "short", "enthusiastic"]


def generation_rows() -> list[dict]:
    rows = []
    for product, features in PRODUCTS:
        for style in STYLES:
            prompt = f"Write a {style} one-sentence description of {product}, {features}."
            lead = {"friendly": "Meet", "formal": "We are pleased to offer", "short": "", "enthusiastic": "Say hello to"}[style]
            body = f"{product}: {features}."
            if style == "short":
                response = body[0].upper() + body[1:]
            elif style == "enthusiastic":
                response = f"{lead} {product}, {features}!"
            else:
                response = f"{lead} {product}, {features}."
            rows.append({"prompt": prompt, "response": response})
    random.Random(9).shuffle(rows)
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
