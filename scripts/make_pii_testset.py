"""Write the labelled PII test set (tests/data/fixtures/pii_labelled.jsonl).

Synthetic: every value is generated here (valid checksums for cards and IBANs, reserved
documentation ranges for IPs, fake keys), embedded in customer-support sentences, together
with hard negatives (order numbers, dates, prices, versions, invalid checksums) that a naive
detector would flag. Each line: {"text": ..., "entities": [{"type": ..., "value": ...}]}.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "fixtures" / "pii_labelled.jsonl"
rng = random.Random(2024)


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        digits = [int(c) for c in body + check]
        total = sum((d * 2 - 9 if d > 4 else d * 2) if i % 2 == 1 else d for i, d in enumerate(reversed(digits)))
        if total % 10 == 0:
            return body + check
    raise AssertionError


def group(num: str, sep: str) -> str:
    return sep.join(num[i : i + 4] for i in range(0, len(num), 4)) if sep else num


def iban(country: str, length: int) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


def main() -> None:
    rows = []
    names = ["anna.berg", "j.smith", "li_wei", "marta+bank", "o.connor"]
    domains = ["example.com", "mail.example.org", "corp.example.co.uk"]
    for i in range(15):
        email = f"{rng.choice(names)}{i}@{rng.choice(domains)}"
        rows.append({"text": f"Please send the statement to {email} before Friday.", "entities": [{"type": "EMAIL", "value": email}]})
    phones = ["+44 20 7946 0958", "+1 (415) 555-0132", "+49 30 901820", "020 7946 0018", "(212) 555-0198",
              "+33 1 23 45 67 89", "555-0142", "+61 2 9876 5432", "+353 1 234 5678", "0161 496 0754",
              "+91 98765 43210", "+81 3-1234-5678"]
    for p in phones:
        rows.append({"text": f"You can call me back on {p} after 5pm.", "entities": [{"type": "PHONE", "value": p}]})
    for i in range(12):
        num = luhn_complete(rng.choice(["4", "51", "37", "6011"]), rng.choice([16, 16, 15]))
        shown = group(num, rng.choice(["", " ", "-"]))
        rows.append({"text": f"My card {shown} was charged twice.", "entities": [{"type": "CARD", "value": shown}]})
    for i in range(10):
        area, grp, serial = rng.randint(1, 665), rng.randint(1, 99), rng.randint(1, 9999)
        ssn = f"{area:03d}-{grp:02d}-{serial:04d}"
        rows.append({"text": f"For the tax form my SSN is {ssn}.", "entities": [{"type": "SSN", "value": ssn}]})
    for country, length in [("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24), ("IT", 27), ("BE", 16), ("AT", 20)]:
        value = iban(country, length)
        if rng.random() < 0.5:
            value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        rows.append({"text": f"Refund it to IBAN {value} please.", "entities": [{"type": "IBAN", "value": value}]})
    for ip in ["192.0.2.15", "198.51.100.7", "203.0.113.254", "10.0.0.1", "2001:db8::1", "2001:db8:85a3:0:0:8a2e:370:7334"]:
        rows.append({"text": f"The login came from {ip} yesterday.", "entities": [{"type": "IP", "value": ip}]})
    secrets = ["sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(40)),
               "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16)),
               "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36)),
               "xoxb-" + "-".join("".join(rng.choice(string.digits) for _ in range(12)) for _ in range(2))]
    for s in secrets:
        rows.append({"text": f"Our integration uses {s} for the webhook.", "entities": [{"type": "SECRET", "value": s}]})
    key_value = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
    rows.append({"text": f"config: api_key={key_value}", "entities": [{"type": "SECRET", "value": key_value}]})
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\nx9d2Qk1s\n-----END RSA PRIVATE KEY-----"
    rows.append({"text": f"I pasted this by mistake:\n{pem}\nsorry", "entities": [{"type": "PRIVATE_KEY", "value": pem}]})
    # several in one text
    email, card = "pat.lee@example.net", luhn_complete("4", 16)
    rows.append({"text": f"Email {email}, card {card}, phone +44 7700 900123.",
                 "entities": [{"type": "EMAIL", "value": email}, {"type": "CARD", "value": card},
                              {"type": "PHONE", "value": "+44 7700 900123"}]})
    not_a_card = luhn_complete("4", 16)
    not_a_card = not_a_card[:-1] + str((int(not_a_card[-1]) + 1) % 10)  # break the check digit
    negatives = [
        f"My order number is {not_a_card} and it has not shipped.",  # fails Luhn
        "I paid 1,250.00 EUR on 2024-03-15 at 14:30.",
        "The app version is 4.12.3 on iOS 17.2.1.",
        "Reference 123-45-678 was on the letter.",
        "Transfer ID TX20240315ABCD is pending.",
        "My account was opened in 2019 and I am 34 years old.",
        "Room 101, floor 3, building 7.",
        "It cost me 49.99 and then 12.50 more.",
        "The error code was 0x80070005.",
        "I tried 3 times at 9 am and 4 pm.",
        "Version 999.300.1.2 of the firmware.",
        "DE00 1234 5678 9012 3456 78 is what the form showed.",  # invalid IBAN check
        "My card ends in 4242.",
        "Ticket #55512 was closed.",
        "The password field is empty.",
        "I want a token of appreciation for the wait.",
    ]
    rows += [{"text": t, "entities": []} for t in negatives]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{len(rows)} texts, {sum(len(r['entities']) for r in rows)} entities -> {OUT}")


if __name__ == "__main__":
    main()
