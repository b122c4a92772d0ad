"""Seeded support tickets with character-span entities, for extraction specialists.

The extraction counterpart of :mod:`lifecycle.synthetic.scenarios`: each ticket is built from
a template whose ``{slot}`` fields are filled with generated values (order ids, amounts,
dates, emails, product names), wrapped in greetings, context and sign-offs, and sometimes
written lowercase or without punctuation. Spans are recorded while the text is assembled, so
offsets are exact by construction (no substring search afterwards, which would mislabel a
value that also occurs elsewhere in the text). Relative dates ("yesterday") stay plain text:
only explicit dates are entities, and a model has to learn the difference.

Values come from a per-row random stream of their own, so changing a label's format
(``formats={"order_id": "v2"}``) changes only the values, not which templates are drawn:
exactly what a format-drift scenario needs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

Entity = dict[str, str | int]
Maker = Callable[[random.Random], str]

#: Labels a ticket carries by default; ``tracking_number`` appears only when asked for.
LABELS: tuple[str, ...] = ("order_id", "amount", "date", "email", "product")
EXTRA_LABELS: tuple[str, ...] = ("tracking_number",)
ALL_LABELS: tuple[str, ...] = (*LABELS, *EXTRA_LABELS)
PLAIN_SHARE = 0.1  # share of rows from templates without any entity

_SLOT = re.compile(r"\{(\w+)\}")
_PUNCTUATION = re.compile(r"[.,!?;:]")
_KEEP_CASE = frozenset({"order_id", "tracking_number"})  # ids are pasted, never retyped

# Hand-aligned data tables: keep the formatter from putting one value per line.
# fmt: off
PRODUCTS: tuple[str, ...] = (
    "AirPods Pro", "AirPods Max", "Kindle Paperwhite", "Kindle Oasis", "Echo Dot", "Echo Show 8",
    "Fire TV Stick", "iPad Air", "iPad mini", "MacBook Air", "Apple Watch SE", "iPhone 15",
    "Galaxy S24", "Galaxy Buds2", "Galaxy Tab S9", "Pixel 8", "Pixel Buds Pro", "Nest Hub",
    "Nest Thermostat", "Ring Video Doorbell", "Sonos One", "Sonos Roam", "Bose QuietComfort 45",
    "Sony WH-1000XM5", "JBL Flip 6", "Beats Studio Buds", "Nintendo Switch OLED",
    "PlayStation 5", "Xbox Series X", "Steam Deck", "Logitech MX Master 3", "Razer DeathAdder",
    "Dell XPS 13", "ThinkPad X1 Carbon", "Surface Pro 9", "Chromecast with Google TV",
    "Roku Express", "GoPro HERO12", "DJI Mini 4", "Fitbit Charge 6", "Garmin Forerunner 265",
    "Oura Ring", "Dyson V15", "Roomba j7", "Instant Pot Duo", "Ninja Air Fryer",
    "Nespresso Vertuo", "KitchenAid Stand Mixer", "Vitamix E310", "Philips Hue Starter Kit",
    "Anker PowerCore 10000", "Samsung T7 SSD", "SanDisk Extreme 1TB", "Kobo Clara",
    "Theragun Mini", "Yeti Rambler", "Hydro Flask 32 oz", "Osprey Daylite", "Brita Maxtra",
    "Oral-B iO Series 9", "Lego Millennium Falcon",
)

# Templates per ticket kind; the id of ``TEMPLATES[kind][i]`` is ``f"{kind}.{i}"``. A slot is
# a label, with a digit suffix for a second value of the same label (``{amount2}``).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "refund": (
        "I'd like a refund for order {order_id}, the {product} stopped working after a week.",
        "Can I get my {amount} back for the {product}? I returned it on {date}.",
        "Requesting a refund of {amount} for order {order_id}.",
        "hi i sent back the {product} and still no refund",
        "Return label used on {date}, refund of {amount} still pending for {order_id}.",
        "How long do refunds usually take? I returned my {product} last week.",
        "I was told I'd get my money back within 5 days and it's been two weeks now.",
    ),
    "late_delivery": (
        "My order {order_id} was supposed to arrive on {date} and it's still not here.",
        "Where is my {product}?? ordered it ages ago",
        "Order {order_id} still says processing. It's been over a week.",
        "The {product} was promised for {date}, today is {date2} and nothing.",
        "package never showed up yesterday, order {order_id}",
        "I paid {amount} for express shipping and the {product} is late anyway.",
    ),
    "wrong_item": (
        "I ordered a {product} but received a {product2} instead. Order {order_id}.",
        "Wrong item in my box - I got a {product} that I never ordered.",
        "Order {order_id} came in the wrong colour.",
        "you sent me the wrong thing, i wanted the {product}",
    ),
    "damaged": (
        "My {product} arrived with a cracked screen.",
        "The box for order {order_id} was crushed and the {product} inside is damaged.",
        "Delivered on {date} already broken, can you replace it?",
    ),
    "billing": (
        "I was charged {amount} twice for order {order_id}.",
        "Why does my statement show {amount} on {date}? I didn't buy anything that day.",
        "I was billed {amount} instead of {amount2} for the {product}.",
        "There's a charge of {amount} I don't recognise.",
        "Can you explain the extra fee on my last bill?",
    ),
    "email_change": (
        "Please change my account email from {email} to {email2}.",
        "I no longer have access to {email}, how do I update it?",
        "Can you send the receipt to {email} instead?",
        "My new email is {email}, please update the account.",
        "Update my contact email please, your mails still go to my old work address.",
    ),
    "invoice": (
        "Could you send an invoice for order {order_id} to {email}?",
        "I need a receipt for the {amount} payment on {date}.",
        "Need the invoice for my {product} for work expenses.",
    ),
    "cancel": (
        "Please cancel order {order_id} before it ships.",
        "I ordered a {product} by mistake on {date}, can it be cancelled?",
        "cancel my order pls, changed my mind",
    ),
    "warranty": (
        "Is my {product} still under warranty? I bought it on {date}.",
        "My {product} died after 13 months, does the warranty cover that?",
    ),
    "price": (
        "The {product} dropped to {amount} the day after I bought it, can I get the difference?",
        "My discount code didn't apply to order {order_id}, I paid {amount} full price.",
        "Do you price match? Another store sells the {product} for {amount}.",
    ),
    "product_question": (
        "When will the {product} be back in stock?",
        "Is the {product} compatible with my old charger?",
    ),
    "account": (
        "I can't log in, my account is under {email}.",
        "I got a password reset email at {email} that I never asked for.",
        "I've been locked out of my account since this morning.",
    ),
    "general": (
        "How do I talk to a real person?",
        "What are your opening hours over the holidays?",
        "Your website keeps logging me out, is something broken?",
    ),
    "tracking": (
        "Tracking number {tracking_number} hasn't moved in days.",
        "Order {order_id} shipped with tracking {tracking_number} but the carrier can't find it.",
        "The courier site shows {tracking_number} as delivered on {date}, but I never got it.",
        "can you check {tracking_number}? my {product} is stuck somewhere",
        "Got a text about parcel {tracking_number}, is that really you?",
    ),
}

_EXTRAS: tuple[str, ...] = (
    "I've been a customer for years.", "This is the second time this has happened.",
    "Please sort this out quickly.", "I already tried the chat but nobody answered.",
    "My order number is {order_id}.", "You can reach me at {email}.",
    "It cost me {amount9}, so not cheap.", "I ordered it on {date9}.",
)  # ids and emails repeat the request's value (same order, same person); {x9} is a new one
_GREETINGS = ("Hi,", "Hello,", "Hey there,", "Good morning,", "Hi team,", "hello support,",
              "Dear customer service,", "hey")
_CONTEXT = ("I'm writing about a recent order.", "Sorry to bother you again.",
            "I hope someone can help.", "Long story short:", "Quick question.",
            "I've tried the FAQ already.")
_FILLERS = ("So ", "Basically ", "Um, ", "Honestly, ", "Just wondering, ", "Ok so ")
_SIGNOFFS = ("Thanks.", "Thanks in advance!", "Cheers", "Regards, Maria", "thx", "Thank you!!",
             "Best, Tom", "Kind regards.")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")
_FIRST = ("anna", "james", "maria", "david", "sophie", "ahmed", "lucas", "emma", "priya", "tom",
          "olivia", "kenji", "fatima", "noah")
_LAST = ("smith", "garcia", "kowalski", "nguyen", "mueller", "okafor", "rossi", "tanaka",
         "brown", "patel")
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.co.uk", "proton.me", "icloud.com",
            "acme-corp.com", "web.de")
_REGIONS = ("US", "EU", "UK", "CA", "DE", "AU")
_UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
# fmt: on


def _amount(rng: random.Random) -> str:
    cents, whole = rng.uniform(3, 900), rng.randint(5, 900)
    return rng.choice(
        (f"${cents:.2f}", f"${whole}", f"{whole} EUR", f"€{cents:.2f}", f"£{whole}", f"{whole} USD")
    )


def _us_date(rng: random.Random) -> str:
    month, day, year = rng.randint(1, 12), rng.randint(1, 28), rng.choice((2025, 2026))
    name = _MONTHS[month - 1]
    return rng.choice(
        (f"{name} {day}, {year}", f"{name} {day}", f"{name[:3]} {day}",
         f"{month}/{day}/{year}", f"{year}-{month:02d}-{day:02d}")
    )  # fmt: skip


def _european_date(rng: random.Random) -> str:
    month, day, year = rng.randint(1, 12), rng.randint(1, 28), rng.choice((2025, 2026))
    name = _MONTHS[month - 1]
    return rng.choice((f"{day:02d}.{month:02d}.{year}", f"{day} {name} {year}", f"{day} {name}"))


def _email(rng: random.Random) -> str:
    first, last, domain = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_DOMAINS)
    user = rng.choice((f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}"))
    return f"{user}@{domain}"


def _tracking(rng: random.Random) -> str:
    def digits(k: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(k))

    ups = f"1Z{digits(3)}{rng.choice(_UPPER)}{rng.choice(_UPPER)}{digits(11)}"
    return rng.choice((ups, f"TBA{digits(12)}", f"9400{digits(18)}"))


#: Value generators per label and format; ``"default"`` is what a format falls back to.
FORMATS: dict[str, dict[str, Maker]] = {
    "order_id": {
        "default": lambda rng: f"ORD-{rng.randint(100000, 999999)}",
        "v2": lambda rng: (
            f"{rng.choice((2025, 2026))}-{rng.choice(_REGIONS)}-"
            f"{rng.randint(1, 9999):04d}-{rng.randint(0, 9999):04d}"
        ),
        "legacy": lambda rng: (
            f"#{rng.choice(_UPPER)}{rng.randint(1000, 9999)}-{rng.randint(10, 99)}"
        ),
    },
    "amount": {"default": _amount},
    "date": {"default": _us_date, "european": _european_date},
    "email": {"default": _email},
    "product": {"default": lambda rng: rng.choice(PRODUCTS)},
    "tracking_number": {"default": _tracking},
}


def template_labels(template: str) -> frozenset[str]:
    """The entity labels a template's slots produce (``{amount2}`` gives ``amount``)."""
    return frozenset(slot.rstrip("0123456789") for slot in _SLOT.findall(template))


def generate_tickets(
    n: int,
    *,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    formats: Mapping[str, str] | None = None,
    require: str | None = None,
) -> pd.DataFrame:
    """``n`` support tickets as a frame with columns text, entities and template.

    ``entities`` holds, per row, a list of ``{"label", "start", "end", "text"}`` sorted by
    start, with ``text[start:end] == entity["text"]``. ``labels`` (default ``LABELS``)
    limits the entity kinds: templates that need another kind are skipped. ``formats`` picks
    a variant of ``FORMATS`` per label. Exactly ``round(PLAIN_SHARE * n)`` rows come from
    templates without entities, unless ``require`` names a label every row must carry (used
    to mix in a share of rows with a new field) or no template fits ``labels``.
    """
    import pandas as pd

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    chosen = _check_labels(labels)
    makers = _makers(chosen, formats)
    if require is not None and require not in chosen:
        raise ValueError(f"require={require!r} is not among the labels {list(chosen)}")
    plain: list[tuple[str, str]] = []
    slotted: list[tuple[str, str]] = []
    for kind, texts in TEMPLATES.items():
        for i, template in enumerate(texts):
            needs = template_labels(template)
            if not needs:
                plain.append((f"{kind}.{i}", template))
            elif needs <= set(chosen) and (require is None or require in needs):
                slotted.append((f"{kind}.{i}", template))
    extras = [e for e in _EXTRAS if template_labels(e) <= set(chosen)]
    n_plain = round(PLAIN_SHARE * n) if require is None else 0
    if not slotted:  # no template fits the labels: every row is plain text
        n_plain = n

    rng = random.Random(seed)
    is_plain = [True] * n_plain + [False] * (n - n_plain)
    rng.shuffle(is_plain)
    texts_out: list[str] = []
    entities_out: list[list[Entity]] = []
    ids: list[str] = []
    for row_plain in is_plain:
        row_seed = rng.getrandbits(64)
        shape, values = random.Random(row_seed), random.Random(row_seed + 1)
        template_id, template = shape.choice(plain if row_plain else slotted)
        pool = [e for e in extras if not template_labels(e)] if row_plain else extras
        text, entities = _compose(template, pool, shape=shape, values=values, makers=makers)
        texts_out.append(text)
        entities_out.append(entities)
        ids.append(template_id)
    return pd.DataFrame(
        {"text": texts_out, "entities": entities_out, "template": ids},
        columns=["text", "entities", "template"],
    )


def _check_labels(labels: Sequence[str] | None) -> tuple[str, ...]:
    if labels is None:
        return LABELS
    if isinstance(labels, str):
        raise ValueError("labels must be a sequence of label names, not one string")
    chosen = tuple(dict.fromkeys(labels))
    unknown = [label for label in chosen if label not in ALL_LABELS]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; known labels are {list(ALL_LABELS)}")
    return chosen


def _makers(labels: tuple[str, ...], formats: Mapping[str, str] | None) -> dict[str, Maker]:
    """One value generator per label: the chosen format, else the default."""
    formats = dict(formats or {})
    for label, fmt in formats.items():
        if label not in FORMATS:
            raise ValueError(f"formats names unknown label {label!r}; known: {list(FORMATS)}")
        if fmt not in FORMATS[label]:
            raise ValueError(
                f"unknown format {fmt!r} for {label!r}; choose one of {list(FORMATS[label])}"
            )
    return {label: FORMATS[label][formats.get(label, "default")] for label in labels}


def _compose(
    template: str,
    extras: Sequence[str],
    *,
    shape: random.Random,
    values: random.Random,
    makers: Mapping[str, Maker],
) -> tuple[str, list[Entity]]:
    """One ticket around ``template``: greeting, context, request, extra, sign-off; styled."""
    body = template
    if shape.random() < 0.15:
        body = _with_filler(body, shape)
    if body.endswith(".") and shape.random() < 0.15:
        body = body[:-1] + shape.choice(("", "!", "..."))
    greeting = ""
    if shape.random() < 0.3:  # on a line of its own, as in an email, or inline, as in a chat
        greeting = shape.choice(_GREETINGS) + shape.choice(("\n", "\n\n", " "))
    parts: list[str] = []
    if shape.random() < 0.2:
        parts.append(shape.choice(_CONTEXT))
    parts.append(body)
    if extras and shape.random() < 0.2:
        parts.append(shape.choice(extras))
    if shape.random() < 0.25:
        parts.append(shape.choice(_SIGNOFFS))
    lowercase = shape.random() < 0.12
    unpunctuated = shape.random() < 0.08
    return _assemble(
        greeting + " ".join(parts),
        values=values,
        makers=makers,
        lowercase=lowercase,
        bare=unpunctuated,
    )


def _with_filler(body: str, rng: random.Random) -> str:
    """``"So can I ..."``: a filler word in front, the request's capital lowered."""
    if body[0].isupper() and not re.match(r"I\b", body):
        body = body[0].lower() + body[1:]
    return rng.choice(_FILLERS) + body


def _assemble(
    text: str,
    *,
    values: random.Random,
    makers: Mapping[str, Maker],
    lowercase: bool,
    bare: bool,
) -> tuple[str, list[Entity]]:
    """Fill the slots of ``text``, recording each value's span as it is appended."""
    out: list[str] = []
    entities: list[Entity] = []
    filled: dict[str, str] = {}
    length = 0
    position = 0
    for match in (*_SLOT.finditer(text), None):
        literal = text[position : match.start() if match else len(text)]
        if lowercase:
            literal = literal.lower()
        if bare:
            literal = re.sub(r" {2,}", " ", _PUNCTUATION.sub("", literal))
        out.append(literal)
        length += len(literal)
        if match is None:
            break
        slot = match.group(1)
        label = slot.rstrip("0123456789")
        value = filled.get(slot) or _fresh(makers[label], values, set(filled.values()))
        filled[slot] = value
        if lowercase and label not in _KEEP_CASE:
            value = value.lower()
        entities.append(
            {"label": label, "start": length, "end": length + len(value), "text": value}
        )
        out.append(value)
        length += len(value)
        position = match.end()
    return "".join(out).rstrip(), entities


def _fresh(make: Maker, rng: random.Random, taken: set[str]) -> str:
    """A value not used yet in this ticket (a second product differs from the first)."""
    value = make(rng)
    for _ in range(8):
        if value not in taken:
            break
        value = make(rng)
    return value
