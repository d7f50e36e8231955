"""One model, three formats: JSON, HTML (a Jinja2 template, every asset inline, nothing
fetched) and PDF (WeasyPrint, from the same HTML). Charts are SVG drawn by matplotlib's Agg
backend. HTML and PDF need the ``reports`` extra; JSON needs nothing.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Literal

from domicile.errors import BadInput, EnvironmentProblem
from domicile.extras import require

Format = Literal["json", "html", "pdf"]
FORMATS: tuple[Format, ...] = ("json", "html", "pdf")
TEMPLATES = Path(__file__).parent / "templates"


def require_extra(fmt: str) -> None:
    """Fail in one line when ``fmt`` needs the ``reports`` extra and it is missing (exit 2),
    or when WeasyPrint is there but the system's pango is not (exit 5)."""
    if fmt == "json":
        return
    try:
        require("reports", f"domicile report --format {fmt}")
    except OSError:  # WeasyPrint imports pango when it is imported
        raise EnvironmentProblem(
            "PDF and HTML reports need the system's pango library",
            hint="install it: scripts/report-deps (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0)",
        ) from None


def to_json(model: dict[str, Any]) -> bytes:
    return (json.dumps(model, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode()


def _svg(draw: Any) -> str:
    """A matplotlib figure drawn by ``draw(ax)`` as an SVG data URI (Agg backend, no
    network, no timestamp in the file)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"svg.hashsalt": "domicile", "font.size": 9}):
        fig, ax = plt.subplots(figsize=(6.4, 2.8))
        try:
            draw(ax)
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _bars(labels: list[str], series: dict[str, list[int]], ylabel: str) -> str:
    def draw(ax: Any) -> None:
        bottom = [0] * len(labels)
        for name, values in series.items():
            ax.bar(range(len(labels)), values, bottom=bottom, label=name)
            bottom = [a + b for a, b in zip(bottom, values, strict=True)]
        step = max(1, len(labels) // 12)
        ax.set_xticks(range(0, len(labels), step))
        ax.set_xticklabels(labels[::step], rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        ax.yaxis.get_major_locator().set_params(integer=True)
        if len(series) > 1 or (series and next(iter(series)) != ylabel):
            ax.legend(fontsize=8)

    return _svg(draw)


def charts(model: dict[str, Any]) -> dict[str, str]:
    """The figures of a model that are better looked at than read, as SVG data URIs."""
    out: dict[str, str] = {}
    if model["kind"] == "compliance":
        sites = model["holdings"]["sites"]
        if sites:
            out["holdings"] = _bars(
                [s["site"] for s in sites],
                {"records": [s["records"] for s in sites], "copies": [s["copies"] for s in sites]},
                "records",
            )
        series = model["transfers"]["series"]
        if series["by_destination"]:
            out["transfers"] = _bars(series["buckets"], series["by_destination"], "transfers")
        outcomes = model["decisions"]["by_outcome"]
        if outcomes:
            out["decisions"] = _bars(
                list(outcomes), {"decisions": list(outcomes.values())}, "decisions"
            )
    elif model["sites"]:
        out["sites"] = _bars(
            [s["site"] for s in model["sites"]],
            {"subjects": [s["subjects"] for s in model["sites"]]},
            "subjects",
        )
    return out


def to_html(model: dict[str, Any]) -> str:
    require_extra("html")
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template(f"{model['kind']}.html.j2")
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8")
    return template.render(m=model, charts=charts(model), css=css)


def to_pdf(model: dict[str, Any]) -> bytes:
    require_extra("pdf")
    import logging

    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)

    def no_fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith("data:"):
            return weasyprint.default_url_fetcher(url, *args, **kwargs)
        raise ValueError("reports fetch nothing")  # every asset is inline

    pdf = weasyprint.HTML(string=to_html(model), url_fetcher=no_fetch).write_pdf()
    assert pdf is not None
    return bytes(pdf)


def render(model: dict[str, Any], fmt: str) -> bytes:
    """A report model in ``fmt`` (json, html or pdf), as bytes."""
    if fmt == "json":
        return to_json(model)
    if fmt == "html":
        return to_html(model).encode()
    if fmt == "pdf":
        return to_pdf(model)
    raise BadInput(f"unknown report format {fmt!r}", hint="use json, html or pdf")


def write_report(
    model: dict[str, Any], folder: str | Path, *, name: str | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> list[Path]:  # fmt: skip
    """Write a report in each of ``formats`` to ``folder`` (which must exist) as
    ``NAME.json``, ``NAME.html``, ``NAME.pdf``; for the evidence pack. Returns the paths."""
    base = Path(folder)
    stem = name or name_of(model)
    out = []
    for fmt in formats:
        data = render(model, fmt)
        path = base / f"{stem}.{fmt}"
        path.write_bytes(data)
        out.append(path)
    return out


def name_of(model: dict[str, Any]) -> str:
    """A report's file name without its suffix."""
    if model["kind"] == "register":
        return f"register-{model['pack']}"
    return f"compliance-{model['jurisdiction'].lower()}-{model['period']['since']}-{model['period']['until']}"
