"""The published numbers repsim compares against, as plain data: Raghu, Raghu, Bengio and
Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of MAML",
ICLR 2020 (arXiv:1909.09157), Tables 1-5 and Figure 2, with the MAML (Finn et al. 2017) and
BOIL (Oh et al. 2021) numbers they are compared with, transcribed from the papers' text.

Every number belongs to a *setting* ``(dataset, ways, shots)``, e.g. ``("omniglot", 20, 1)`` or
``("miniimagenet", 5, 5)``; a setting whose shots the paper does not state has ``shots=None``
and never matches a measured setting exactly. Values the papers leave uncertain carry
``uncertain=True``: treat them as defaults, not facts.

    >>> paper_value("maml_vs_anil", ("omniglot", 20, 1), "MAML", "inner-loop").value
    93.7

Tables (aliases in brackets):
    freezing      [table1]  MiniImageNet 5w, MAML-trained, layers frozen at test time.
                            rows: "none", "conv1", "conv1,conv2", ... ; cols: "accuracy",
                            "accuracy (earlier version)" (the earlier arXiv version's numbers)
    maml_vs_anil  [table2]  rows "MAML", "ANIL"; col "inner-loop"
    maml_original           rows "MAML (Finn et al. 2017)"; col "inner-loop" (Omniglot only)
    cross         [table3]  rows "MAML-MAML", "ANIL-ANIL", "ANIL-MAML"; cols "cca", "cka"
                            (body layers averaged, across seeds)
    nil           [table4]  row "ANIL" (NIL testing after ANIL training); col "nil"
    regimes       [table5]  rows maml, anil, multiclass, multitask, random features, nil; col "nil"
    boil                    Oh et al. 2021, rows "MAML", "ANIL", "BOIL"; col "inner-loop"
    similarity              figure 2, read qualitatively (no published table): rows "body",
                            "head"; cols "cca", "cka"; ``value`` is a bound, see ``text``
"""

from __future__ import annotations

from dataclasses import dataclass

Setting = tuple  # (dataset: str, ways: int, shots: int | None)

RAGHU = "Raghu et al. 2020"
FINN = "Finn et al. 2017 (original MAML paper)"
OH = "Oh et al. 2021 (BOIL)"

OMNI_20_1 = ("omniglot", 20, 1)
OMNI_20_5 = ("omniglot", 20, 5)
OMNI_5_1 = ("omniglot", 5, 1)
OMNI_5_5 = ("omniglot", 5, 5)
MINI_5_1 = ("miniimagenet", 5, 1)
MINI_5_5 = ("miniimagenet", 5, 5)
MINI_5_UNSTATED = ("miniimagenet", 5, None)


@dataclass(frozen=True)
class PaperValue:
    """One published number: mean, the +- after it (std over seeds where the paper gives one),
    and whether the paper's text confirms it."""
    value: float
    pm: float | None = None
    uncertain: bool = False
    source: str = RAGHU
    where: str = ""
    text: str = ""          # for qualitative entries: the claim, e.g. "> 0.9"

    def format(self, digits: int = 1) -> str:
        if self.text:
            s = self.text
        else:
            s = f"{self.value:.{digits}f}"
            if self.pm is not None:
                s += f" ± {self.pm:g}"
        return s + (" (?)" if self.uncertain else "")


def _v(value, pm=None, uncertain=False, source=RAGHU, where=""):
    return PaperValue(float(value), None if pm is None else float(pm), uncertain, source, where)


def _freezing():
    rows = ["none", "conv1", "conv1,conv2", "conv1,conv2,conv3", "conv1,conv2,conv3,conv4"]
    one = [(46.9, 0.2), (46.5, 0.3), (46.4, 0.4), (46.3, 0.4), (46.3, 0.4)]
    five = [(63.1, 0.4, False), (63.0, 0.4, True), (62.1, 0.6, True), (61.5, 0.5, True), (61.0, 0.6, False)]
    one_v1 = [44.5, 44.8, 44.8, 44.7, 44.7]
    five_v1 = [61.7, 61.7, 61.4, 60.2, 60.2]
    w = "Table 1"
    return {
        MINI_5_1: {r: {"accuracy": _v(m, s, where=w),
                       "accuracy (earlier version)": _v(e, where=w + ", earlier version")}
                   for r, (m, s), e in zip(rows, one, one_v1)},
        MINI_5_5: {r: {"accuracy": _v(m, s, u, where=w),
                       "accuracy (earlier version)": _v(e, where=w + ", earlier version")}
                   for r, (m, s, u), e in zip(rows, five, five_v1)},
    }


TABLES: dict[str, dict[Setting, dict[str, dict[str, PaperValue]]]] = {
    "freezing": _freezing(),
    "maml_vs_anil": {
        OMNI_20_1: {"MAML": {"inner-loop": _v(93.7, 0.7, where="Table 2")},
                    "ANIL": {"inner-loop": _v(96.2, 0.5, where="Table 2")}},
        OMNI_20_5: {"MAML": {"inner-loop": _v(96.4, 0.1, where="Table 2")},
                    "ANIL": {"inner-loop": _v(98.0, 0.3, where="Table 2")}},
        MINI_5_1: {"MAML": {"inner-loop": _v(46.9, 0.2, where="Table 2")},
                   "ANIL": {"inner-loop": _v(46.7, 0.4, where="Table 2")}},
        MINI_5_5: {"MAML": {"inner-loop": _v(63.1, 0.4, where="Table 2")},
                   "ANIL": {"inner-loop": _v(61.5, 0.5, where="Table 2")}},
    },
    "maml_original": {
        s: {"MAML (Finn et al. 2017)": {"inner-loop": _v(v, source=FINN, where="quoted under Table 2")}}
        for s, v in ((OMNI_5_1, 98.7), (OMNI_5_5, 99.9), (OMNI_20_1, 95.8), (OMNI_20_5, 98.9))
    },
    "cross": {
        # the paper does not state the shots of Table 3; the representation analysis uses 5-way
        # MiniImageNet tasks with 15 queries per class.
        MINI_5_UNSTATED: {
            "MAML-MAML": {"cca": _v(0.51, where="Table 3"), "cka": _v(0.83, where="Table 3")},
            "ANIL-ANIL": {"cca": _v(0.51, where="Table 3"), "cka": _v(0.86, where="Table 3")},
            "ANIL-MAML": {"cca": _v(0.50, where="Table 3"), "cka": _v(0.83, where="Table 3")},
        },
    },
    "nil": {
        OMNI_20_1: {"ANIL": {"nil": _v(96.7, 0.3, where="Table 4")}},
        OMNI_20_5: {"ANIL": {"nil": _v(98.0, 0.04, where="Table 4")}},
        MINI_5_1: {"ANIL": {"nil": _v(48.0, 0.7, where="Table 4")}},
        MINI_5_5: {"ANIL": {"nil": _v(62.2, 0.5, where="Table 4")}},
    },
    "regimes": {
        s: {r: {"nil": _v(v, where="Table 5")} for r, v in vals.items()}
        for s, vals in (
            (MINI_5_1, {"maml": 48.4, "anil": 48.0, "multiclass": 39.7, "multitask": 26.5,
                        "random features": 32.9, "nil": 38.3}),
            (MINI_5_5, {"maml": 61.5, "anil": 62.2, "multiclass": 54.4, "multitask": 34.2,
                        "random features": 43.2, "nil": 43.0}),
        )
    },
    "boil": {
        s: {r: {"inner-loop": _v(v, source=OH, where="Oh et al. 2021")} for r, v in vals.items()}
        for s, vals in ((MINI_5_1, {"MAML": 47.4, "ANIL": 47.8, "BOIL": 49.6}),
                        (MINI_5_5, {"MAML": 61.8, "ANIL": 63.0, "BOIL": 66.5}))
    },
    "similarity": {
        MINI_5_UNSTATED: {
            "body": {"cca": PaperValue(0.9, text="> 0.9", where="Figure 2 (qualitative)"),
                     "cka": PaperValue(1.0, text="≈ 1", where="Figure 2 (qualitative)")},
            "head": {"cca": PaperValue(0.5, text="< 0.5", where="Figure 2 (qualitative)")},
        },
    },
}

ALIASES = {"table1": "freezing", "table2": "maml_vs_anil", "table3": "cross", "table4": "nil",
           "table5": "regimes"}

# Regime names in the paper's Table 5, by repsim's regime (algorithm) name.
REGIME_NAMES = {"maml": "MAML", "anil": "ANIL", "multiclass": "multiclass pretraining",
                "multitask": "multitask training", "random features": "random features",
                "nil": "NIL training"}

# The paper's speed-up of ANIL over MAML (its own implementation), printed beside repsim bench train's.
SPEED = {"ANIL vs MAML training iteration": 1.7, "ANIL vs MAML inference iteration": 4.1}


def _table(table: str) -> dict:
    name = ALIASES.get(table.lower(), table.lower())
    if name not in TABLES:
        raise KeyError(f"unknown paper table {table!r}: one of {', '.join(sorted(TABLES))}")
    return TABLES[name]


def normalise_setting(setting) -> Setting:
    dataset, ways, shots = setting
    return (str(dataset).lower(), int(ways), None if shots is None else int(shots))


def paper_value(table: str, setting, row: str, col: str) -> PaperValue | None:
    """The published number for exactly this setting, row and column, or None."""
    return _table(table).get(normalise_setting(setting), {}).get(row, {}).get(col)


def settings(table: str) -> list[Setting]:
    return list(_table(table))


def nearest_setting(table: str, setting) -> Setting | None:
    """The table's setting closest to ``setting``: same data set first, then same ways, then
    nearest shots (an exact match returns itself)."""
    dataset, ways, shots = normalise_setting(setting)

    def distance(s):
        d_shots = 0 if s[2] == shots else (abs(s[2] - shots) if s[2] is not None and shots is not None else 0.5)
        return ((s[0] != dataset) * 1000 + (s[1] != ways) * 100 + d_shots, s[1], -1 if s[2] is None else s[2])

    candidates = settings(table)
    return min(candidates, key=distance) if candidates else None


def setting_label(setting) -> str:
    """"MiniImageNet 5w1s", "Omniglot 20w5s", "MiniImageNet 5w, shots not stated"."""
    dataset, ways, shots = setting
    name = {"omniglot": "Omniglot", "miniimagenet": "MiniImageNet", "synthetic": "synthetic"}.get(
        str(dataset).lower(), str(dataset))
    return f"{name} {ways}w{shots}s" if shots is not None else f"{name} {ways}w, shots not stated"
