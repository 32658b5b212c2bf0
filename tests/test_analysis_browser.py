"""Open the report in headless Chromium with the network off: every figure drawn, no console error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fixtures_analysis import make_tables, partial_tables, write_run  # also puts the checkout on sys.path

from analysis import build_report

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)

# Injected into a copy of the report: records console.error/warn and uncaught errors, then
# writes them and the number of drawn plots into the DOM that --dump-dom prints.
# Every report section the page must show (issue 12): banner, table of contents, summary, pretraining
# verdict, numbers table, run provenance, Parquet paths, resolved config.
SECTIONS = [
    "synthetic-banner",
    "toc",
    "summary-sentences",
    "pretraining",
    "pretraining-verdict",
    "numbers-table",
    "run",
    "run-facts",
    "parquet-paths",
    "resolved-config",
]
HOOK = (
    """<script>
var SECTIONS = """
    + json.dumps(SECTIONS)
    + """;
window.__problems = [];
window.addEventListener('error', function (e) { window.__problems.push('error: ' + e.message); }, true);
window.addEventListener('unhandledrejection', function (e) { window.__problems.push('rejection: ' + e.reason); });
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () {
    window.__problems.push(level + ': ' + Array.prototype.join.call(arguments, ' '));
    orig.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  setTimeout(function () {
    var out = document.createElement('pre');
    out.id = 'browser-check';
    var toc = document.getElementById('toc');
    out.textContent = JSON.stringify({problems: window.__problems,
      plots: document.querySelectorAll('.js-plotly-plot').length,
      svgs: document.querySelectorAll('.js-plotly-plot .main-svg').length,
      sections: SECTIONS.filter(function (id) { return document.getElementById(id) !== null; }),
      sticky: toc ? getComputedStyle(toc).position : null,
      csv: Array.prototype.filter.call(document.querySelectorAll('a.csv'), function (a) {
        return a.href.indexOf('data:text/csv;base64,') === 0; }).length,
      placeholders: Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'), function (plot) {
        return plot.textContent.indexOf('new text') >= 0; }).length,
      labels: Array.prototype.map.call(document.querySelectorAll('.js-plotly-plot'), function (plot) {
        return Array.prototype.map.call(plot.querySelectorAll('g.annotation'), function (g) {
          var r = g.getBoundingClientRect();
          return {text: g.textContent, box: [r.left, r.top, r.right, r.bottom]};
        });
      })});
    document.body.appendChild(out);
  }, 1500);
});
</script>"""
)


def chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Headless Chromium without network (dead proxy for everything but loopback)."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        *extra,
        url,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def console_lines(stderr: str) -> list[str]:
    """Page console messages: Chromium logs them as '...:INFO:CONSOLE(..)] "msg", source: ...'."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def boxes_intersect(a: list[float], b: list[float]) -> bool:
    """Whether two drawn boxes (left, top, right, bottom) share an area (touching is not)."""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


@pytest.mark.parametrize("kind", ["full", "partial"])
def test_report_draws_every_figure_offline(tmp_path, kind):
    tables = make_tables(folds=3) if kind == "full" else partial_tables()
    run = write_run(tmp_path / "run", tables, analysis={"curve_bootstrap": 10, "n_bootstrap": 200})
    report = build_report(run)
    html = report.read_text(encoding="utf-8")
    n_figures = int(re.search(r"raystudy-figures' content='(\d+)'", html).group(1))
    assert n_figures >= 9

    # 1) The report as written: no console output at all (errors, failed loads, warnings).
    plain = chromium(report.as_uri(), tmp_path / "profile1", "--dump-dom")
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert console_lines(plain.stderr) == [], console_lines(plain.stderr)
    drawn = re.findall(r"class=\"[^\"]*\bjs-plotly-plot\b", plain.stdout)
    assert len(drawn) == n_figures
    assert plain.stdout.count('class="main-svg"') >= n_figures

    # 2) A copy with the console hook: errors/warnings counted inside the page itself.
    hooked = tmp_path / "hooked.html"
    hooked.write_text(html.replace("<head>", "<head>" + HOOK, 1), encoding="utf-8")
    checks = {}
    for width in (1024, 1400):  # a small laptop window and a laptop screen
        res = chromium(hooked.as_uri(), tmp_path / f"profile-{width}", f"--window-size={width},1000", "--dump-dom")
        found = re.search(r"<pre id=\"browser-check\">(.*?)</pre>", res.stdout, re.S)
        assert found, "the check script did not run: " + res.stderr[-2000:]
        checks[width] = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    check = checks[1400]
    assert check["problems"] == []
    assert check["plots"] == n_figures
    assert check["svgs"] >= n_figures
    # every section present (fixture runs are synthetic: banner shown; a partial run has no pretraining yet)
    assert check["sections"] == [s for s in SECTIONS if kind == "full" or s != "pretraining-verdict"]
    assert check["sticky"] == "sticky"  # the table of contents stays in view
    assert check["csv"] >= n_figures  # an offline CSV download per figure (+ the numbers table)
    # every annotation has its own text (Plotly writes "new text" for one without) and no two
    # labels of one figure are drawn on top of each other
    for width, seen in checks.items():
        labels = [label for plot in seen["labels"] for label in plot]
        assert labels and all(label["text"].strip() and label["text"] != "new text" for label in labels), labels
        assert seen["placeholders"] == 0
        overlaps = [
            (a["text"], b["text"])
            for plot in seen["labels"]
            for i, a in enumerate(plot)
            for b in plot[i + 1 :]
            if boxes_intersect(a["box"], b["box"])
        ]
        assert overlaps == [], f"{width} px: " + "\n".join(" | ".join(pair) for pair in overlaps)

    if kind == "full":  # a screenshot to look at while developing (kept in pytest's tmp dir)
        shot = tmp_path / "report.png"
        chromium(
            report.as_uri(),
            tmp_path / "profile3",
            "--hide-scrollbars",
            "--window-size=1400,4000",
            f"--screenshot={shot}",
        )
        assert shot.is_file() and shot.stat().st_size > 10_000
