"""Figures for papers (TrueType fonts, page and column widths, provenance sidecars rather than
footers), and the report's table of contents, citation, file names and title."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from report_fixtures import build_results, record_tables
from repsim import statistics
from repsim.report import write_report
from repsim.report.figures import COLUMN_WIDTH, DPI, FIGURES, PAGE_WIDTH

STEMS = tuple(FIGURES)
TYPE3 = b"/Subtype /Type3"
SIDECAR_KEYS = {"figure", "analysis", "results", "files", "caption", "marks", "data", "setting", "tasks",
                "task_seed", "confidence_interval", "similarity_conventions", "training_conventions", "seeds",
                "iterations", "checkpoints", "analysed_by", "drawn_by", "paper"}


def _variants(folder: Path):
    for stem in STEMS:
        yield stem, folder / "figures" / f"{stem}", PAGE_WIDTH
        yield stem, folder / "figures" / f"{stem}-column", COLUMN_WIDTH


def test_the_type3_search_finds_type3_fonts():
    """The check below would see the old figures' fonts: matplotlib's default, Type 3."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def pdf(fonttype):
        fig = Figure(figsize=(2, 1))
        FigureCanvasAgg(fig)
        fig.text(0.1, 0.5, "MAML 95.0 ‖θ′−θ‖")
        out = io.BytesIO()
        with matplotlib.rc_context({"pdf.fonttype": fonttype, "pdf.compression": 6}):
            fig.savefig(out, format="pdf")
        return out.getvalue()
    assert TYPE3 in pdf(3) and TYPE3 not in pdf(42)


def test_pdfs_embed_truetype_fonts_never_type3(rendered_report):
    folder, _ = rendered_report
    for stem, base, _ in _variants(folder):
        data = base.with_suffix(".pdf").read_bytes()
        assert data.startswith(b"%PDF")
        assert TYPE3 not in data, f"{base.name}.pdf has a Type 3 font"
        assert b"/FontFile2" in data, f"{base.name}.pdf embeds no TrueType font"


def test_figures_are_drawn_at_page_and_column_width(rendered_report):
    folder, _ = rendered_report
    for stem, base, width in _variants(folder):
        with Image.open(base.with_suffix(".png")) as im:
            im.verify()
        with Image.open(base.with_suffix(".png")) as im:
            w, h = im.size
            assert w / DPI == pytest.approx(width, abs=1 / DPI), base.name
            assert 1.0 <= h / DPI <= 9.0, base.name  # fits a page
            assert im.info["dpi"][0] == pytest.approx(DPI, abs=0.1)
        side = json.loads((folder / "figures" / f"{stem}.json").read_text())
        variant = "page" if width == PAGE_WIDTH else "column"
        assert side["files"][variant]["width_in"] == width
        assert side["files"][variant]["height_in"] == pytest.approx(h / DPI, abs=1 / DPI)


def test_each_figure_has_a_sidecar_with_its_provenance_and_no_footer(rendered_report):
    folder, report = rendered_report
    md = report.read_text()
    for stem in STEMS:
        side = json.loads((folder / "figures" / f"{stem}.json").read_text())
        assert SIDECAR_KEYS <= set(side), SIDECAR_KEYS - set(side)
        assert side["figure"] == stem and side["tasks"] == 20 and side["task_seed"] == 7
        assert side["data"]["dataset"] == "omniglot" and side["data"]["ways"] == 20 and side["data"]["shots"] == 1
        assert side["confidence_interval"].startswith("95%")
        assert side["drawn_by"]["repsim_version"] and side["analysed_by"]["repsim_version"] == "0.1.0"
        assert "arXiv:1909.09157" in side["paper"]
        assert side["checkpoints"] and all(not c["file"].startswith("/") for c in side["checkpoints"])
        assert side["caption"] in md  # the report's caption, provenance included
        assert f"{stem}-column.pdf" in md
    assert json.loads((folder / "figures" / "similarity.json").read_text())["seeds"] == {
        "MAML": [0], "ANIL": [0], "BOIL": [0]}
    assert json.loads((folder / "figures" / "freezing.json").read_text())["seeds"] == {"MAML": [0, 1]}


def test_no_provenance_text_is_drawn_into_a_figure(rendered_report):
    from matplotlib.text import Text

    from repsim.report.figures import WIDTHS
    from repsim.report.loading import load_results
    folder, _ = rendered_report
    results, _ = load_results(folder)
    for stem in STEMS:
        for width in WIDTHS.values():
            fig, _ = FIGURES[stem](results[stem], width)
            texts = [t.get_text() for t in fig.findobj(Text)]
            said = [t for t in texts if any(w in t.lower() for w in ("task seed", "conventions", "omniglot", "split"))]
            assert not said, (stem, width, said)


def test_algorithms_have_their_display_names_in_every_figure(rendered_report):
    from matplotlib.text import Text

    from repsim.report.loading import load_results
    folder, _ = rendered_report
    results, _ = load_results(folder)
    for stem in STEMS:
        fig, _ = FIGURES[stem](results[stem], PAGE_WIDTH)
        fig.canvas.draw()
        words = {w for t in fig.findobj(Text) for w in re.findall(r"[A-Za-z]+", t.get_text())}
        assert not words & {"maml", "anil", "boil"}, (stem, words & {"maml", "anil", "boil"})
    fig, _ = FIGURES["regimes"](results["regimes"], PAGE_WIDTH)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["MAML", "ANIL", "multiclass", "random features"]


def test_weight_change_puts_body_and_head_on_axes_of_their_own(rendered_report):
    from repsim.report.loading import load_results
    results, _ = load_results(rendered_report[0])
    for width in (PAGE_WIDTH, COLUMN_WIDTH):
        fig, note = FIGURES["weight_change"](results["weight_change"], width)
        body, head = fig.axes[:2]
        assert [t.get_text() for t in body.get_xticklabels()] == ["conv1", "conv2", "conv3", "conv4"]
        assert [t.get_text() for t in head.get_xticklabels()] == ["head"]
        assert body.get_ylim()[1] < 0.2 < head.get_ylim()[1]  # body bars (0.02, 0.1) are not scaled by the head's 0.4
        assert "own scale" in note


def test_through_training_legend_is_compact(rendered_report):
    from repsim.report.loading import load_results
    results, _ = load_results(rendered_report[0])
    for width in (PAGE_WIDTH, COLUMN_WIDTH):
        fig, _ = FIGURES["through_training"](results["through_training"], width)
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == ["MAML", "conv1", "conv2", "conv3", "conv4", "head"]  # line style, then colours
        assert [ax.get_title() for ax in fig.axes] == ["Accuracy", "CCA per layer", "CKA per layer"]


def test_rendering_twice_is_byte_identical(rendered_report):
    folder, report = rendered_report
    files = [report, folder / "report.html", *sorted((folder / "figures").iterdir())]
    first = {p.name: p.read_bytes() for p in files}
    assert {f"{s}.json" for s in STEMS} <= set(first)
    write_report(folder)
    second = {p.name: p.read_bytes() for p in [report, folder / "report.html", *sorted((folder / "figures").iterdir())]}
    assert first == second
    assert not list(folder.rglob("*.tmp"))


def test_html_headings_have_ids_and_a_table_of_contents_links_each(rendered_report):
    folder, _ = rendered_report
    page = (folder / "report.html").read_text()
    headings = re.findall(r"<h([1-6])([^>]*)>", page)
    assert len(headings) > 8
    ids = []
    for level, attrs in headings:
        m = re.search(r'\bid="([^"]+)"', attrs)
        assert m, f"<h{level}{attrs}> has no id"
        ids.append((int(level), m.group(1)))
    assert len({i for _, i in ids}) == len(ids)  # unique
    nav = re.search(r'<nav class="toc"[^>]*>(.*?)</nav>', page, re.S)
    assert nav and page.index("<nav") < page.index("<h2")  # at the top, after the title
    links = re.findall(r'href="#([^"]+)"', nav.group(1))
    assert links == [i for level, i in ids if level > 1]
    assert "verdict-measured" in links and "references" in links


def test_markdown_has_a_table_of_contents_with_anchor_links(rendered_report):
    _, report = rendered_report
    md = report.read_text()
    toc = md[md.index("**Contents**"):md.index("\n## ")]
    assert "- [Verdict (measured)](#verdict-measured)" in toc
    assert ("- [Relative weight change per layer (MAML / ANIL / BOIL)]"
            "(#relative-weight-change-per-layer-maml--anil--boil)") in toc
    assert toc.count("](#") == md.count("\n## ")


def test_report_cites_the_paper_and_repsim_paper_not_paper_md(rendered_report):
    _, report = rendered_report
    md = report.read_text()
    intro = md[:md.index("## Verdict")]
    assert "PAPER.md" not in intro  # (tables.py's notes still name it: not this test's business)
    assert "`repsim.paper`" in md and "arXiv:1909.09157" in md and "ICLR 2020" in md
    assert "Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of MAML" in md
    assert md.startswith("# Reproduction of Raghu et al. 2020 with repsim: Omniglot 20w1s\n")
    assert "## References" in md


def test_provenance_names_checkpoint_files_without_absolute_paths(rendered_report, tmp_path):
    _, report = rendered_report
    md = report.read_text()
    assert "/ckpt/" not in md and "maml-0.safetensors`" in md  # build_results' files are /ckpt/ALG-SEED...

    # files that exist are named relative to the results folder, whatever the working folder;
    # the others by as much of their path as tells them apart, never absolutely
    project = tmp_path / "project"
    folder = build_results(project / "results", names=("similarity",))
    prov = json.loads((folder / "similarity.json").read_text())
    for c in prov["checkpoints"]:
        run = project / "runs" / f"{c['algorithm']}-s{c['seed']}"
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "model.safetensors").write_bytes(b"")
        c["checkpoint"] = f"runs/{c['algorithm']}-s{c['seed']}/model.safetensors"  # relative to the project
    prov["checkpoints"][1]["checkpoint"] = "/home/dev/old/anil-s0/model.safetensors"  # not on this machine
    prov["checkpoints"][2]["checkpoint"] = "/home/dev/old/boil-s0/checkpoints/iter-000500.safetensors"
    (folder / "similarity.json").write_text(json.dumps(prov))
    md = write_report(folder).read_text()
    side = json.loads((folder / "figures" / "similarity.json").read_text())
    assert [c["file"] for c in side["checkpoints"]] == [
        "../runs/maml-s0/model.safetensors", "anil-s0/model.safetensors",
        "boil-s0/checkpoints/iter-000500.safetensors"]
    assert "/home/dev" not in md and "/home/dev" not in json.dumps(side)


def test_models_with_names_of_their_own_get_a_neutral_title(tmp_path):
    folder = build_results(tmp_path / "r", names=("accuracy", "similarity"))
    for name in ("accuracy", "similarity"):
        prov = json.loads((folder / f"{name}.json").read_text())
        for c in prov["checkpoints"]:
            if c["algorithm"] == "maml":
                c["model"] = "l2l-maml"  # as `repsim import --name l2l-maml` labels it
        (folder / f"{name}.json").write_text(json.dumps(prov))
    md = write_report(folder).read_text()
    title = md.splitlines()[0]
    assert title == "# repsim report: l2l-maml, ANIL, BOIL on Omniglot 20w1s", title
    intro = next(p for p in md.split("\n\n") if "A. Raghu" in p)
    # beside repsim's training of the paper's recipes, the renamed model alone is not a reproduction
    assert intro.startswith("Reproduction of A. Raghu") and "for ANIL, BOIL, which repsim trained" in intro, intro
    assert "l2l-maml is a model with a name of its own" in intro and "it is not a reproduction" in intro, intro
    # models all of their own: the analyses applied to them, nothing called a reproduction
    for name in ("accuracy", "similarity"):
        prov = json.loads((folder / f"{name}.json").read_text())
        for c in prov["checkpoints"]:
            c["model"] = f"mine-{c['algorithm']}"
        (folder / f"{name}.json").write_text(json.dumps(prov))
    intro = next(p for p in write_report(folder).read_text().split("\n\n") if "A. Raghu" in p)
    assert intro.startswith("The analyses of A. Raghu") and "Reproduction" not in intro, intro
    assert "they are not a reproduction" in intro, intro
    # repsim's own training of the paper's recipes is a reproduction
    plain = build_results(tmp_path / "p", names=("accuracy",))
    assert write_report(plain).read_text().startswith("# Reproduction of Raghu et al. 2020 with repsim:")


def test_report_command_title_heads_both_pages(tmp_path):
    """A published folder's report is remade under its own title (`repsim report --title`), not the
    default one: the heading of report.md and the <title> and <h1> of report.html."""
    from repsim.cli import main
    folder = build_results(tmp_path / "r", names=("accuracy",))
    title = "repsim reference checkpoints: Omniglot 20-way 1-shot"
    assert main(["report", str(folder), "--title", title]) == 0
    assert (folder / "report.md").read_text().splitlines()[0] == f"# {title}"
    html = (folder / "report.html").read_text()
    assert f"<title>{title}</title>" in html and re.search(f"<h1[^>]*>{title}<", html)
    main(["report", str(folder)])  # without it, the default title again
    assert (folder / "report.md").read_text().startswith("# Reproduction of Raghu et al. 2020 with repsim:")


def test_similarity_figure_shows_each_seeds_mean_beside_the_ci_over_tasks(tmp_path):
    """Seeds of one algorithm that disagree (0.4 vs 0.8 on the head) are drawn as dots, and the
    caption says so; a single seed draws none."""
    from repsim.report.figures import _seed_means
    from repsim.report.loading import load_results

    folder = build_results(tmp_path / "r", dataset="synthetic", ways=5, shots=1, names=("similarity",))
    rows = [{"model": "maml", "algorithm": "maml", "layer": layer, "measure": "cca", "seed": seed, "task": task,
             "value": (0.4 if seed == 0 else 0.8) if layer == "head" else 0.9}
            for seed in (0, 1) for task in range(3) for layer in ("conv1", "head")]
    statistics.seed_means(pd.DataFrame(rows)).to_csv(folder / "similarity_seeds.csv", index=False)
    record_tables(folder, "similarity")
    res = load_results(folder)[0]["similarity"]
    means = _seed_means(res, "cca", {})
    assert sorted(means["maml"]["head"]) == pytest.approx([0.4, 0.8])
    md = write_report(folder).read_text()
    assert "dots: each seed's mean" in md
    statistics.seed_means(pd.DataFrame([r for r in rows if r["seed"] == 0])).to_csv(folder / "similarity_seeds.csv",
                                                                                 index=False)
    record_tables(folder, "similarity")
    assert "dots: each seed's mean" not in write_report(folder).read_text()
