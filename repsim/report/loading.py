"""Reading a results folder: each analysis' NAME.csv, its provenance NAME.json and, where the
analysis wrote them, its further summaries NAME_SUFFIX.csv (:data:`repsim.results.EXTRA_TABLES`).
Damaged files give a one-line error saying which analysis to re-run. The report computes no
summary, so the per-task rows (NAME_tasks.csv) are not read: the runner summarised them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from repsim.errors import RepsimError, one_line
from repsim.names import DECLARATIONS, declaration
from repsim.results import EXTRA_TABLES, FORMAT, table_digest

_REQUIRED = {d.stem: d.columns for d in DECLARATIONS}  # each analysis' summary table's columns
_NUMERIC = ("mean", "ci95", "accuracy", "seed", "iteration", "tasks", "n", "seeds", "value", "seed_std",
            "change", "change_ci95", "seed_a", "seed_b", "std", "model_pairs", "low", "high", "ci95_min",
            "ci95_max", "change_ci95_min", "change_ci95_max", "body_mean", "body_min", "body_max", "head_mean")
_BOOLEAN = ("same_seed",)


@dataclass
class Result:
    name: str
    table: pd.DataFrame
    prov: dict
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)  # suffix -> NAME_SUFFIX.csv

    @property
    def study(self) -> dict:
        return self.prov.get("study") or {}

    @property
    def checkpoints(self) -> list[dict]:
        """The provenance of each checkpoint, with its model in the algorithm's place (as the
        tables are read, :func:`_by_model`)."""
        return [{**c, "algorithm": c["model"]} for c in self.prov.get("checkpoints") or []]

    @property
    def setting(self) -> tuple:
        s, c = self.study, (self.checkpoints[0] if self.checkpoints else {})
        dataset = s.get("dataset", c.get("dataset", "unknown"))
        ways, shots = s.get("ways", c.get("ways")), s.get("shots", c.get("shots"))
        return (str(dataset).lower(), int(ways) if ways is not None else 0,
                int(shots) if shots is not None else None)

    @property
    def chance(self) -> float | None:
        ways = self.setting[1]
        return 100.0 / ways if ways else None

    def over_seeds(self) -> list[dict]:
        """Its table pooled over seeds, as the runner wrote it (NAME_over_seeds.csv,
        :func:`repsim.statistics.over_seeds`), a dict per row: the row's keys, ``mean``, ``std``
        over seeds, ``seeds`` (a list), ``cis`` (the smallest and largest of the seeds' 95% CI half-widths over
        tasks), ``change`` (None where the analysis has none) with ``change_cis``, and
        ``tasks`` (None where unknown)."""
        out = []
        for r in self.extras["over_seeds"].to_dict("records"):
            r["seeds"] = [_number(x) for x in str(r.pop("seed_list")).split()]
            r["std"], r["cis"] = r.pop("seed_std"), [r.pop("ci95_min"), r.pop("ci95_max")]
            r["change_cis"] = [r.pop("change_ci95_min"), r.pop("change_ci95_max")] if "change" in r else []
            r.setdefault("change", None)
            r["tasks"] = int(r["tasks"]) if pd.notna(r.get("tasks")) else None
            out.append(r)
        return out

    def _provenance_of(self, model) -> list[dict]:
        """The provenance of the checkpoints behind ``model`` (a row's algorithm or name)."""
        return [c for c in self.checkpoints if str(c.get("model")) == str(model)]

    def imported(self, model) -> bool:
        """Whether ``model`` was trained elsewhere and imported: its iteration (0) is then not
        a point of any schedule."""
        return any(c.get("imported") for c in self._provenance_of(model))

    def seed_unknown(self, model) -> bool:
        """Whether ``model`` was imported without a seed: its config's default seed (0) then
        says nothing."""
        return any(unknown_seed(c) for c in self._provenance_of(model))

    def reduced(self, algorithm, seed=None, iteration=None) -> bool:
        for c in self.checkpoints:
            if (str(c.get("algorithm")) == str(algorithm) and (seed is None or _same(c.get("seed"), seed))
                    and (iteration is None or _same(c.get("iteration"), iteration))
                    and c.get("reduced_schedule")):
                return True
        return False


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def unknown_seed(checkpoint: dict) -> bool:
    """Whether a checkpoint's provenance is that of a model imported without a seed."""
    return bool(checkpoint.get("imported")) and not checkpoint.get("seed_known")


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _read_csv(path: Path, required=(), recorded: dict | None = None) -> pd.DataFrame:
    """A result table, checked against the digest its NAME.json ``recorded``."""
    if path.name not in (recorded or {}):
        raise RepsimError(f"{path} is not among the tables its analysis recorded writing: re-run the "
                          f"analysis that wrote it")
    try:
        intact = table_digest(path.read_bytes()) == recorded[path.name]
    except OSError as e:
        raise RepsimError(f"cannot read {path} ({e.strerror}): re-run the analysis that wrote it") from None
    if not intact:
        raise RepsimError(f"{path} is not the table its analysis wrote (cut short or edited since): "
                          f"re-run the analysis that wrote it")
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise RepsimError(f"cannot read {path} ({one_line(e)}): re-run the analysis that wrote it") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise RepsimError(f"cannot read {path}: no column {', '.join(missing)}; re-run the analysis that wrote it")
    for c in _NUMERIC:
        if c in df.columns:
            try:
                df[c] = pd.to_numeric(df[c])
            except (ValueError, TypeError):
                raise RepsimError(f"cannot read {path}: column {c} is not numeric; "
                                  "re-run the analysis that wrote it") from None
    for c in df.columns:
        if c in _BOOLEAN:
            text = df[c].astype(str)
            if not text.isin(("True", "False")).all():
                raise RepsimError(f"cannot read {path}: column {c} is not True or False; "
                                  "re-run the analysis that wrote it")
            df[c] = text == "True"
        elif c not in _NUMERIC:
            df[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return _by_model(df, path)


def _by_model(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The report compares models: an algorithm with its seeds pooled, or a model with a name
    of its own (an imported one, say). Every row records the ``model`` it belongs to, and is
    read with it in the algorithm's place, so two MAMLs of different names never share a row,
    a bar or a curve."""
    if "algorithm" not in df.columns:
        return df
    if "model" not in df.columns:
        raise RepsimError(f"cannot read {path}: no column model; re-run the analysis that wrote it")
    return df.assign(algorithm=df["model"].where(df["model"] != "", df["algorithm"]))


_TYPES = {int: "an integer", str: "a string", bool: "true or false"}
_STUDY_FIELDS = {"tasks": int, "task_seed": int, "ways": int, "shots": int, "queries": int, "dataset": str,
                 "confidence_interval": str}
_CHECKPOINT_FIELDS = {"seed": int, "iteration": int, "algorithm": str, "model": str, "label": str,
                      "checkpoint": str, "reduced_schedule": bool, "imported": bool, "seed_known": bool}


def _damaged_provenance(prov: dict) -> str | None:
    """What is wrong with the shape of a provenance record (None: nothing), so that a damaged
    or hand-edited NAME.json is one line, not a traceback from deep in the report."""
    study, checkpoints = prov.get("study", {}), prov.get("checkpoints", [])
    if not isinstance(study, dict):
        return "its study is not an object"
    if not isinstance(checkpoints, list) or not all(isinstance(c, dict) for c in checkpoints):
        return "its checkpoints are not a list of objects"
    for where, record, fields in [("study", study, _STUDY_FIELDS)] + [
            (f"checkpoint {i}", c, _CHECKPOINT_FIELDS) for i, c in enumerate(checkpoints)]:
        for key, kind in fields.items():
            value = record.get(key)
            if value is not None and not (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
                return f"{where}'s {key} is {value!r}, not {_TYPES[kind]}"
    return None


# What every result of this format holds beside its table's columns, and the report reads with
# no fallback (the extra tables each analysis declares, the CI's definition, each checkpoint's
# label and model, an import's seed_known): a result without it is an earlier repsim's, refused
# as of another format
def _earlier_format(name: str, prov: dict, extras: dict) -> str | None:
    """What an earlier repsim's result of ``name`` lacks of the above (None: nothing)."""
    lacking = ([f"{name}_{s}.csv" for s in declaration(name).extra_tables if s not in extras]
               + ["study.confidence_interval"] * ("confidence_interval" not in prov.get("study", {}))
               + [f"checkpoint {i}'s seed_known" for i, c in enumerate(prov.get("checkpoints", []))
                  if c.get("imported") and "seed_known" not in c]
               + [f"checkpoint {i}'s {key}" for i, c in enumerate(prov.get("checkpoints", []))
                  for key in ("label", "model") if key not in c])
    return ", ".join(lacking) or None


def _unread_format(meta: Path, prov: dict, which: str) -> RepsimError:
    return RepsimError(f"{meta} is of {which}, which this repsim does not read (it reads {FORMAT!r}): re-run "
                       f"'repsim analyze' into {meta.parent}, or report it with the repsim that wrote it")


def load_result(folder: Path, name: str) -> Result | str:
    """Analysis ``name``'s result in ``folder``, or why there is none ("not run", "unfinished", "empty")."""
    csv, meta = folder / f"{name}.csv", folder / f"{name}.json"
    if not csv.exists() and not meta.exists():
        return f"not run (no {name}.csv)"
    if not meta.is_file():
        return f"unfinished ({name}.csv without {name}.json)"
    if not csv.is_file():
        return f"unfinished ({name}.json without {name}.csv)"
    try:
        prov = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RepsimError(f"cannot read {meta} ({one_line(e)}): re-run the analysis that wrote it") from None
    if not isinstance(prov, dict):
        raise RepsimError(f"cannot read {meta}: not a provenance record; re-run the analysis that wrote it")
    if prov.get("format") != FORMAT:
        raise _unread_format(meta, prov, f"format {prov['format']!r}" if "format" in prov
                             else "an earlier format (no format field)")
    wrong = _damaged_provenance(prov)
    if wrong:
        raise RepsimError(f"cannot read {meta}: {wrong}; re-run the analysis that wrote it")
    recorded = prov.get("tables") if isinstance(prov.get("tables"), dict) else None
    table = _read_csv(csv, _REQUIRED[name], recorded)
    if table.empty:
        return f"empty ({name}.csv has no rows)"
    extras = {suffix: _read_csv(folder / f"{name}_{suffix}.csv", recorded=recorded) for suffix in EXTRA_TABLES
              if (folder / f"{name}_{suffix}.csv").is_file()}
    lacking = _earlier_format(name, prov, extras)
    if lacking:
        raise _unread_format(meta, prov, f"an earlier format (no {lacking})")
    return Result(name, table, prov, extras)


def load_results(results_dir) -> tuple[dict[str, Result], dict[str, str]]:
    """The analyses found in ``results_dir`` and, for the others, why they are missing."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise RepsimError(f"no results folder at {folder}: run 'repsim analyze ... --out {folder}' first")
    found, missing = {}, {}
    for d in DECLARATIONS:
        result = load_result(folder, d.stem)
        if isinstance(result, Result):
            found[d.stem] = result
        else:
            missing[d.name] = result  # as the CLI spells it
    if not found:
        why = [f"{a}: {m}" for a, m in missing.items() if not m.startswith("not run")]
        raise RepsimError(f"{folder} holds no finished repsim analysis ("
                          + ("; ".join(why) if why else f"none of {', '.join(d.stem + '.csv' for d in DECLARATIONS)}")
                          + "): run 'repsim analyze' into it")
    return found, missing
