"""Were the REKI release's user groups built from the prompt windows or from whole histories?

    python -m bench.release_windows --data ../shared/data/movielens_1m --release ../shared/data/reki_release_ml1m

For each view, the items the release lists per user group (`item_grouplist.json`: items its members
liked, resp. disliked) are looked up in the members' ratings: inside KAR's prompt window (the first
n = min((len+1)//2, 30) ratings) or anywhere in their histories. Items listed from after the window
mean the grouping saw the period the CTR samples (test included) come from. The window is counted
in both orders `features.order` offers: KAR's (UTC calendar day, file order within a day: the
release's own) and the product's default (timestamp, file order within a second)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

VIEWS = {"positive": lambda r: r["rating"] > 3, "negative": lambda r: r["rating"] <= 3}


SECONDS_PER_DAY = 86_400
ORDERS = {"kar": lambda ts: ts // SECONDS_PER_DAY, "timestamp": lambda ts: ts}


def _ratings(data: Path, release: Path, order: str) -> pd.DataFrame:
    ratings = pd.read_csv(data / "ratings.dat", sep="::", engine="python", names=["user", "item", "rating", "ts"])
    users = pd.read_csv(release / "user_ids.csv").set_index("movielens_user_id")["reki_user_id"]
    items = pd.read_csv(release / "item_ids.csv").set_index("movielens_movie_id")["reki_item_id"]
    ratings = ratings.assign(user=ratings["user"].map(users), item=ratings["item"].map(items))
    ratings = ratings.assign(key=ORDERS[order](ratings["ts"])).sort_values(["user", "key"], kind="stable")
    window = ((ratings.groupby("user")["item"].transform("size") + 1) // 2).clip(upper=30)
    return ratings.assign(in_window=ratings.groupby("user").cumcount() < window)


def listed_items(data: Path, release: Path, order: str) -> dict[str, dict[str, int]]:
    ratings = _ratings(data, release, order)
    counts = {}
    for view, rule in VIEWS.items():
        groups = json.loads((release / "user" / view / "result" / "grouplist.json").read_text())
        listed = json.loads((release / "user" / view / "item_grouplist.json").read_text())
        kept = ratings[rule(ratings)]
        total = in_window = in_history = 0
        for group, members in groups.items():
            mine = kept[kept["user"].isin(members)]
            items = set(listed[group])
            total += len(items)
            in_window += len(items & set(mine.loc[mine["in_window"], "item"]))
            in_history += len(items & set(mine["item"]))
        counts[view] = {"listed": total, "in_members_windows": in_window, "in_members_histories": in_history}
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="the MovieLens-1M folder (ratings.dat)")
    parser.add_argument("--release", required=True, type=Path, help="the REKI release folder with its id maps")
    args = parser.parse_args()
    print(json.dumps({order: listed_items(args.data, args.release, order) for order in ORDERS}, indent=2))


if __name__ == "__main__":
    main()
