"""What the sample holds: its dates, the experiment, the categories and their products, the pages
and the names of its users, and the rates of the behaviour it plants (see ``seeds/README.md``).
Prices are in cents, times in epoch milliseconds (UTC)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone

START_DATE = "2026-01-05"  # first day with data (a Monday)
END_DATE = "2026-04-06"  # first day without data: events fall in [START_DATE, END_DATE)
PROMO_START = "2026-03-09"  # the Home Supplies promotion and the experiment start (a Monday)
EXPERIMENT = "home_supplies_promo"
EXPERIMENT_NAME = "Home Supplies Promo"
CONTROL_VARIANT = "control"
TREATMENT_VARIANT = "promo"
TARGET_CATEGORY = "Home Supplies"
CURRENCY = "USD"
CONVERSION_WINDOW_DAYS = 7
EXPERIMENT_WINDOW_DAYS = 30


@dataclass(frozen=True)
class Category:
    name: str
    code: str
    weight: float  # relative chance that a user browses the category
    conversion: float  # planted first-view -> purchase (7 days) conversion
    avg_price_cents: int  # planted mean item price of the catalogue (and of purchased lines)
    products: tuple[str, ...]


CATALOG: tuple[Category, ...] = (
    Category("Electronics", "EL", 1.10, 0.62, 46390, (
        "Wireless Headphones", "4K Monitor", "Bluetooth Speaker", "Smartwatch", "Tablet",
        "Mechanical Keyboard", "Action Camera", "Noise-Cancelling Earbuds", "Portable Projector",
        "Gaming Mouse", "E-Reader", "Smart Home Hub")),
    Category("Home Supplies", "HS", 1.05, 0.395, 46120, (
        "Robot Vacuum", "Air Purifier", "Cookware Set", "Bamboo Towel Set", "Stand Mixer",
        "Espresso Machine", "Linen Bedding Set", "Steam Mop", "Knife Block Set",
        "Storage Organizer Set", "Humidifier", "Cordless Iron")),
    Category("Entertainment", "EN", 0.85, 0.397, 46050, (
        "Board Game Collection", "Record Player", "Streaming Stick", "Game Console",
        "Karaoke Machine", "Soundbar", "VR Headset", "Arcade Cabinet", "Movie Box Set", "Drone",
        "Jigsaw Puzzle Set", "Party Speaker")),
    Category("Furniture", "FU", 0.42, 0.55, 45740, (
        "Office Chair", "Standing Desk", "Bookshelf", "Accent Chair", "Coffee Table", "Bed Frame",
        "TV Stand", "Dining Chair Set", "Floor Lamp", "Nightstand", "Ottoman", "Wardrobe")),
    Category("Apparel", "AP", 0.38, 0.66, 44980, (
        "Wool Coat", "Running Shoes", "Leather Jacket", "Denim Jeans", "Cashmere Sweater",
        "Rain Jacket", "Dress Shoes", "Silk Scarf", "Hiking Boots", "Linen Shirt", "Puffer Vest",
        "Tailored Blazer")),
    Category("Jewelry", "JW", 0.44, 0.52, 47160, (
        "Gold Necklace", "Silver Bracelet", "Diamond Studs", "Pearl Earrings", "Signet Ring",
        "Charm Bracelet", "Pendant", "Cufflinks", "Anklet", "Tennis Bracelet", "Hoop Earrings",
        "Watch Band")),
    Category("Sports & Outdoors", "SP", 0.40, 0.58, 45530, (
        "Bike Helmet", "Camping Tent", "Kayak Paddle", "Yoga Mat Set", "Trekking Poles",
        "Sleeping Bag", "Dumbbell Set", "Fishing Rod", "Climbing Harness", "Golf Rangefinder",
        "Snowboard Bindings", "Rowing Machine")),
    Category("Health & Beauty", "HB", 0.36, 0.69, 45270, (
        "Hair Dryer", "Electric Toothbrush", "Skincare Set", "Massage Gun", "Fragrance",
        "Curling Iron", "Smart Scale", "Facial Steamer", "Shaver", "LED Face Mask", "Makeup Kit",
        "Blood Pressure Monitor")),
)
# Products sold without a category (kept in fct_* relations, left out of category stats).
UNCATEGORIZED: tuple[tuple[str, str, int], ...] = (
    ("Gift Card", "GC-050", 5000),
    ("Extended Warranty", "WTY-079", 7900),
    ("Gift Wrap", "GW-007", 699),
)
CATEGORIES: tuple[str, ...] = tuple(c.name for c in CATALOG)

# Pairs of price offsets around the category mean (cents): every pair averages exactly to it.
_PRICE_OFFSETS = (30021, 22017, 15013, 9011, 4507, 1503)
PRODUCTS_PER_CATEGORY = 2 * len(_PRICE_OFFSETS)

# Behaviour knobs (rates are planted exactly by stratified assignment where noted).
HS_PROMO_CONVERSION = 0.52  # Home Supplies first-view conversion, promo arm, after PROMO_START
LATE_PURCHASE = 0.10  # non-converted interest bought later, outside the 7-day window
REPEAT_PURCHASE = 0.22  # converted interest bought again 10+ days later
RETURN_RATE = 0.55  # pre-promo Home Supplies non-converters who come back after PROMO_START
RETURN_BUY_PROMO = 0.80  # ... and buy Home Supplies on that visit, promo arm
RETURN_BUY_CONTROL = 0.25  # ... control arm
PROMO_BUNDLE = 0.60  # promo-arm Home Supplies orders after PROMO_START with a second item
BOTH_VARIANTS = 0.015  # exposed users who later see the other variant too (excluded)
DUPLICATE_RATE = 0.005
BAD_LINES_PER_EVENT = 1e-4

MS_MIN = 60_000
MS_HOUR = 3_600_000
MS_DAY = 86_400_000

SLUGS = [c.name.lower().replace(" & ", "-").replace(" ", "-") for c in CATALOG]
OTHER_PAGES = [("Home", "/"), ("Search", "/search"), ("Deals", "/deals"), ("Account", "/account")]
FIRST_NAMES = (
    "Ava", "Liam", "Mia", "Noah", "Zoe", "Ethan", "Lena", "Omar", "Iris", "Lucas", "Nora", "Ravi",
    "Sofia", "Mateo", "Chloe", "Kenji", "Amara", "Felix", "Hana", "Diego", "Maya", "Jonas",
    "Priya", "Leo", "Elena", "Tariq", "Yuki", "Sam", "Grace", "Ivan", "Lucia", "Ben")
LAST_NAMES = (
    "Garcia", "Smith", "Chen", "Okafor", "Novak", "Rossi", "Kim", "Silva", "Nguyen", "Larsen",
    "Haddad", "Patel", "Moreau", "Sato", "Kowalski", "Brown", "Fischer", "Lopez", "Ivanova",
    "Mensah", "Murphy", "Cohen", "Dubois", "Tanaka", "Costa", "Berg", "Ali", "Walsh", "Reyes",
    "Singh", "Park", "Weber")


def epoch_ms(iso_date: str) -> int:
    d = date.fromisoformat(iso_date)
    return int(datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp() * 1000)


def json_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def product_rows() -> list[tuple[int, int, str, str, str, str | None, int]]:
    """(category index, product index, product_id, sku, name, category, price in cents).

    Within a category products come in (low, high) pairs whose mean is the category's planted
    average price; purchased lines cycle through the products in this order.
    """
    rows: list[tuple[int, int, str, str, str, str | None, int]] = []
    for ci, cat in enumerate(CATALOG):
        prices: list[int] = []
        for off in _PRICE_OFFSETS:
            low = cat.avg_price_cents - off
            prices += [low, 2 * cat.avg_price_cents - low]
        for pj, (name, price) in enumerate(zip(cat.products, prices, strict=True)):
            sku = f"{cat.code}-{pj + 1:03d}"
            pid = hashlib.md5(sku.encode()).hexdigest()[:24]
            rows.append((ci, pj, pid, sku, name, cat.name, price))
    for pj, (name, sku, price) in enumerate(UNCATEGORIZED):
        pid = hashlib.md5(sku.encode()).hexdigest()[:24]
        rows.append((len(CATALOG), pj, pid, sku, name, None, price))
    return rows


def product_json(pid: str, sku: str, name: str, category: str | None) -> str:
    """The product's JSON members up to (not including) its price."""
    parts = [f'"product_id":{json_str(pid)}', f'"sku":{json_str(sku)}']
    if category is not None:
        parts.append(f'"category":{json_str(category)}')
    parts.append(f'"name":{json_str(name)}')
    return ",".join(parts)
