"""selector.report: the HTML selection report, from a real select run on a generated pool.

The numbers in the report are checked against independent computations (pandas correlations,
counts from the manifest), the HTML against self-containment and escaping, and the page against a
real headless Chromium (skipped with the reason when no Chromium binary is installed).
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from conftest import make_cc_sbu_align, write_image
from selector.core.errors import InputError

pytest.importorskip("matplotlib", reason="matplotlib is not installed (the 'report' extra)")

from selector.model.fit import train_selector  # noqa: E402
from selector.selection.select import select  # noqa: E402
from selector.model.synthetic import synthetic_feature_pool  # noqa: E402
from selector.core.jsonio import write_json  # noqa: E402
from selector.report.html import SECTIONS, THUMBNAIL_PX, thumbnail  # noqa: E402
from selector.report.page import report_command, write_report  # noqa: E402
from selector.core.settings import load_settings  # noqa: E402

MARKER = (230, 20, 200)  # left half of every sample image: a colour nothing else in the page uses
IMAGE_SIZE = (300, 200)
SECTION_IDS = [anchor for anchor, _ in SECTIONS]


def sample_colour(sample_id: str):
    n = int(sample_id)
    return (n * 53 % 200 + 30, n * 97 % 200 + 30, 60)


def caption_of(sample_id: str) -> str:
    """Captions that break an unescaped page: markup, a script, quotes, an ampersand, a URL."""
    return (f'toy {sample_id}: <script>alert({sample_id})</script> & "quoted" <b>not bold</b> '
            f"see http://example.org/{sample_id}?a=1&b=2\nsecond line")


def write_sample_image(path: Path, sample_id: str) -> None:
    from PIL import Image

    image = Image.new("RGB", IMAGE_SIZE, sample_colour(sample_id))
    image.paste(MARKER, (0, 0, IMAGE_SIZE[0] // 2, IMAGE_SIZE[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="JPEG", quality=95)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A trained selector (with its cross-validation) and a selection, made by the real commands."""
    root = tmp_path_factory.mktemp("report")
    pool, _, _ = synthetic_feature_pool(90, seed=3)
    pool_path = pool.save(root / "pool.safetensors")
    data = make_cc_sbu_align(root / "data", {i: caption_of(i) for i in pool.ids}, images=False)
    for sample_id in pool.ids:
        write_sample_image(data / "image" / f"{sample_id}.jpg", sample_id)
    subsets = {str(s): pool.ids[s * 15:(s + 1) * 15] for s in range(6)}
    quality = dict(zip(pool.ids, pool.indicator("clip").tolist()))
    labels = {name: 30 + float(np.mean([quality[i] for i in ids])) / 10
              for name, ids in subsets.items()}
    write_json(root / "subsets.json", subsets)
    write_json(root / "labels.json", {"labels": labels})
    settings = load_settings(overrides=["training.epochs=4", "training.patience=0",
                                        "selection.num_samples=12", "selection.n_clusters=4",
                                        "selection.n_neighbors=20", "model.score_rounds=1"])
    train_selector(root / "ckpt", settings, pool_path, root / "subsets.json", root / "labels.json")
    select(root / "sel", settings, pool_path, root / "ckpt", data_dir=data)
    return {"root": root, "pool": pool, "pool_path": pool_path, "data": data,
            "ckpt": root / "ckpt", "sel": root / "sel", "settings": settings}


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags = Counter()
        self.ids = set()
        self.urls = []  # every attribute that can make a browser load something
        self.images = []  # (class, src, alt)
        self.cards = []  # data-id of example cards
        self.csp = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for name in ("src", "href", "srcset", "poster", "data", "action", "background"):
            if name in attrs:
                self.urls.append((tag, name, attrs[name]))
        if tag == "img":
            self.images.append((attrs.get("class"), attrs.get("src", ""), attrs.get("alt")))
        if "data-id" in attrs:
            self.cards.append(attrs["data-id"])
        if tag == "meta" and attrs.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = attrs.get("content")


def parse(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    return parser


def decode(uri: str) -> bytes:
    header, payload = uri.split(",", 1)
    assert header.endswith(";base64"), header
    return base64.b64decode(payload)


def near(pixel, colour, tolerance=24) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour))


def test_report_numbers_sections_escaping_and_self_containment(made, tmp_path):
    from PIL import Image
    import pandas as pd

    out = report_command(made["sel"], made["pool_path"], made["ckpt"], made["data"],
                         tmp_path / "out" / "my report.html", max_examples=5)
    assert out == tmp_path / "out" / "my report.html"
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    report = json.loads((tmp_path / "out" / "my_report_data.json").read_text())
    manifest = json.loads((made["sel"] / "manifest.json").read_text())
    pool = made["pool"]

    # every section is there, and nothing can be loaded from outside the file
    assert set(SECTION_IDS) <= page.ids
    assert page.tags["script"] == 0 and page.tags["link"] == 0 and page.tags["iframe"] == 0
    policy = dict(d.strip().split(None, 1) for d in (page.csp or "").split(";") if d.strip())
    assert policy == {"default-src": "'none'", "img-src": "data:", "style-src": "'unsafe-inline'"}
    for tag, name, value in page.urls:
        assert value.startswith("#") or (tag == "img" and name == "src" and
                                         value.startswith("data:image/")), (tag, name, value[:60])
    assert "url(" not in text and "@import" not in text
    shown = [i for group in report["examples"].values() for i in group]
    assert len(shown) == 15 and sorted(page.cards) == sorted(shown)
    # captions: escaped, never live markup; the only http:// in the file is inside caption text
    assert "<script>alert(" not in text and "<b>not bold</b>" not in text
    stripped = text
    for sample_id in shown:
        escaped = html.escape(caption_of(sample_id), quote=True)
        assert escaped in text, sample_id
        stripped = stripped.replace(escaped, "")
    assert "http://" not in stripped and "https://" not in stripped

    # plots: written beside the HTML, and the very same bytes embedded
    plots = {path: (tmp_path / "out" / path).read_bytes() for path in report["plots"].values()}
    assert set(report["plots"]) == {"indicators", "correlations", "clusters", "cross_validation"}
    embedded = [decode(src) for cls, src, _ in page.images if cls == "plot"]
    assert sorted(embedded) == sorted(plots.values())
    for payload in plots.values():
        with Image.open(io.BytesIO(payload)) as image:
            assert image.format == "PNG" and min(image.size) > 200

    # thumbnails: fitted into 128 px with the aspect ratio kept, and each shows its own sample
    thumbs = [(alt.split()[-1], decode(src)) for cls, src, alt in page.images if cls == "thumb"]
    assert sorted(i for i, _ in thumbs) == sorted(shown)
    for sample_id, payload in thumbs:
        with Image.open(io.BytesIO(payload)) as image:
            assert image.size == (THUMBNAIL_PX, round(THUMBNAIL_PX * IMAGE_SIZE[1] / IMAGE_SIZE[0]))
            rgb = image.convert("RGB")
            assert near(rgb.getpixel((THUMBNAIL_PX // 4, 40)), MARKER)
            assert near(rgb.getpixel((3 * THUMBNAIL_PX // 4, 40)), sample_colour(sample_id))

    # numbers, recomputed here from the manifest and the pool
    rows = manifest["samples"]
    score = {r["id"]: r["score"] for r in rows}
    chosen = {r["id"] for r in rows if r["selected"]}
    frame = pd.DataFrame(pool.indicators.astype(np.float64), columns=pool.indicator_names)
    frame["score"] = [score[i] for i in pool.ids]
    assert report["correlations"]["labels"] == list(frame.columns)
    for method in ("pearson", "spearman"):
        np.testing.assert_allclose(report["correlations"][method], frame.corr(method=method).values,
                                   atol=1e-9)
    selected_rows = frame[[i in chosen for i in pool.ids]]
    for entry in report["indicators"]:
        assert entry["pool_mean"] == pytest.approx(frame[entry["indicator"]].mean())
        assert entry["selected_mean"] == pytest.approx(selected_rows[entry["indicator"]].mean())
    sizes = Counter(r["cluster"] for r in rows)
    picked = Counter(r["cluster"] for r in rows if r["selected"])
    assert {c["cluster"]: (c["size"], c["quota"], c["selected"]) for c in report["clusters"]} == {
        name: (sizes[name], manifest["quotas"][name], picked[name]) for name in sizes}
    assert [c["size"] for c in report["clusters"]] == sorted(sizes.values(), reverse=True)
    training = json.loads((made["ckpt"] / "training_report.json").read_text())
    assert report["cross_validation"]["rows"] == json.loads(
        json.dumps(training["cross_validation"]["rows"]).replace("NaN", "null"))
    for row in training["cross_validation"]["rows"]:
        assert html.escape(row["model"]) in text
    # example groups: best selected, best rejected, worst rejected (ids distinct, by score)
    by_score = sorted(pool.ids, key=lambda i: -score[i])
    best, near_misses, worst = report["examples"].values()
    assert best == [i for i in by_score if i in chosen][:5]
    assert near_misses == [i for i in by_score if i not in chosen][:5]
    assert worst == [i for i in reversed(by_score) if i not in chosen][:5]
    assert len(manifest["selected"]) == 12 and f"12 of {len(pool)}" in text


def test_missing_optional_inputs_are_said_in_their_sections(made, tmp_path):
    # a baseline selection: no clusters, no checkpoint, no captions anywhere
    random_sel = tmp_path / "random"
    select(random_sel, made["settings"], made["pool_path"], baseline="random")
    out = write_report(tmp_path / "r1", made["pool_path"], random_sel)
    text = out.read_text(encoding="utf-8")
    assert set(SECTION_IDS) <= parse(text).ids
    assert "No cross-validation table: no selector checkpoint given" in text
    assert "No diversity clusters: this selection was made by baseline random" in text
    assert "no captions: the selection folder has no filter_cap.json" in text
    assert "All scores in the manifest are equal" in text
    report = json.loads((tmp_path / "r1" / "report_data.json").read_text())
    assert set(report["plots"]) == {"indicators", "correlations"}
    assert report["cross_validation"] is None and report["clusters"] == []

    # without --data: the selected samples' captions and images come from the selection folder
    out = write_report(tmp_path / "r2", made["pool_path"], made["sel"], max_examples=3)
    text = out.read_text(encoding="utf-8")
    page = parse(text)
    report = json.loads((tmp_path / "r2" / "report_data.json").read_text())
    best, near_misses, worst = report["examples"].values()
    for sample_id in best:
        assert html.escape(caption_of(sample_id), quote=True) in text
    for sample_id in near_misses + worst:
        assert html.escape(caption_of(sample_id), quote=True) not in text
    assert text.count("no caption available") == len(near_misses + worst)
    assert sorted(alt.split()[-1] for cls, _, alt in page.images if cls == "thumb") == sorted(best)
    assert "rejected samples have no caption here" in text


def test_released_pth_checkpoint_and_recorded_checkpoint(made, tmp_path):
    weights = tmp_path / "best_model.pth"
    weights.write_bytes(b"not read")
    out = write_report(tmp_path / "r", made["pool_path"], made["sel"], checkpoint=weights,
                       max_examples=0)
    assert "carries no cross-validation report" in out.read_text(encoding="utf-8")
    # igpt4 report without --checkpoint takes the one igpt4 select recorded
    out = report_command(made["sel"], made["pool_path"], out=tmp_path / "r2" / "x.html",
                         max_examples=0)
    assert json.loads((tmp_path / "r2" / "x_data.json").read_text())["cross_validation"]


def test_bad_inputs_are_one_line_errors(made, tmp_path):
    with pytest.raises(InputError, match="no manifest.json"):
        write_report(tmp_path, made["pool_path"], tmp_path)
    other, _, _ = synthetic_feature_pool(40, seed=1)
    other_path = other.save(tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="manifest.json: sample '42' is not in the pool .50 "
                       "unknown ids.: was the selection made from another pool"):
        write_report(tmp_path / "x", other_path, made["sel"])
    bigger, _, _ = synthetic_feature_pool(95, seed=3)
    with pytest.raises(InputError, match="covers 90 of the pool's 95 samples .sample '92'"):
        write_report(tmp_path / "x", bigger.save(tmp_path / "big.safetensors"), made["sel"])
    with pytest.raises(InputError, match="selector checkpoint not found"):
        write_report(tmp_path / "x", made["pool_path"], made["sel"], tmp_path / "nope")
    with pytest.raises(InputError, match="must end in .html"):
        report_command(made["sel"], made["pool_path"], out=tmp_path / "report.pdf")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"samples": [{"id": "2", "score": "high", '
                                          '"selected": true}]}')
    with pytest.raises(InputError, match="sample '2' has a non-numeric score"):
        write_report(tmp_path / "x", made["pool_path"], broken)


def test_thumbnails_fit_honour_exif_and_explain_failures(tmp_path):
    from PIL import Image

    wide = tmp_path / "wide.jpg"
    image = Image.new("RGB", (300, 100), (10, 200, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated by 90 degrees
    image.save(wide, format="JPEG", exif=exif)
    uri, why = thumbnail(wide)
    with Image.open(io.BytesIO(decode(uri))) as shown:
        assert shown.size == (43, 128) and why == ""
    tiny = write_image(tmp_path / "tiny.jpg", size=(8, 8))
    with Image.open(io.BytesIO(decode(thumbnail(tiny)[0]))) as shown:
        assert shown.size == (8, 8)  # never enlarged
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 not a jpeg")
    assert thumbnail(corrupt) == (None, "image unreadable (UnidentifiedImageError)")
    assert thumbnail(tmp_path / "missing.jpg") == (None, "image file missing")
    assert thumbnail(None) == (None, "no image known")


# ----------------------------------------------------------------------- headless Chromium

def chromium_binary():
    for name in (os.environ.get("IGPT4_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def run_chromium(binary, profile: Path, *args: str):
    """(stdout, console lines) of one headless run; the whole process group dies on timeout."""
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND",  # no network, whatever the page asks
               "--enable-logging=stderr", "--v=0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    assert process.returncode == 0, err[-2000:]
    console = [line for line in err.splitlines() if re.search(r":CONSOLE[:(]", line)]
    return out, console


@pytest.fixture(scope="module")
def chromium():
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set IGPT4_CHROMIUM)")
    return binary


def test_renders_in_headless_chromium(chromium, made, tmp_path):
    """Opened offline in a real browser: sections rendered, pictures painted, console silent."""
    from PIL import Image

    binary = chromium
    out = write_report(tmp_path / "page", made["pool_path"], made["sel"], made["ckpt"],
                       made["data"], max_examples=4)
    url = out.resolve().as_uri()
    profile = tmp_path / "profile"

    dom, console = run_chromium(binary, profile, "--dump-dom", url)
    assert console == [], console  # no CSP violation, failed load or script message
    rendered = parse(dom)
    assert set(SECTION_IDS) <= rendered.ids
    assert len(rendered.cards) == 12 and rendered.tags["img"] == parse(out.read_text()).tags["img"]

    shot = tmp_path / "shot.png"
    _, console = run_chromium(binary, profile, f"--screenshot={shot}", "--window-size=1280,9000",
                              url)
    assert console == [], console
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(np.int32)
    coarse = pixels // 8
    colours = np.unique(coarse[:, 0] * 1024 + coarse[:, 1] * 32 + coarse[:, 2])
    assert len(colours) > 200, "the screenshot is nearly blank"
    # the embedded pictures were decoded and painted: the thumbnails' marker colour and the
    # histograms' pool colour (matplotlib C0 at alpha 0.45 over white) are on screen
    marker = np.all(np.abs(pixels - MARKER) <= 20, axis=1).sum()
    c0_over_white = np.array([255, 255, 255]) * 0.55 + np.array([31, 119, 180]) * 0.45
    histogram = np.all(np.abs(pixels - c0_over_white) <= 6, axis=1).sum()
    assert marker > 12 * 1000 and histogram > 5000, (marker, histogram)

    # the console check itself catches what it must: an outside image and a script
    bad = out.with_name("broken.html")
    bad.write_text(out.read_text().replace(
        "<main>", '<main><img src="https://example.org/x.png"><script>console.log(1)</script>'))
    _, console = run_chromium(binary, profile, "--dump-dom", bad.resolve().as_uri())
    assert any("example.org" in line for line in console) and len(console) >= 2, console


def test_report_on_the_released_selection(reference_dir, tmp_path):
    """The released 200 of cc_sbu_align's 3439: the cluster table follows the paper's quota rule
    on the released spectral clusters, and the real captions are shown escaped."""
    from selector.selection.reference_select import reference_select
    from selector.scoring.reference import ReferenceRepo

    repo = ReferenceRepo(reference_dir)
    reference_select(reference_dir, tmp_path / "sel")
    pool_path = repo.pool().save(tmp_path / "pool.safetensors")
    text = write_report(tmp_path / "r", pool_path, tmp_path / "sel", max_examples=6).read_text(
        encoding="utf-8")
    report = json.loads((tmp_path / "r" / "report_data.json").read_text())
    clusters = json.loads((reference_dir / "cluster/spectral/clustering_results.json").read_text())
    assert {c["cluster"]: (c["size"], c["quota"]) for c in report["clusters"]} == {
        str(name): (len(ids), max(1, int(204 * len(ids) / 3439))) for name, ids in clusters.items()}
    assert sum(c["selected"] for c in report["clusters"]) == 200
    assert report["counts"] == {"pool": 3439, "selected": 200}
    captions = repo.captions()
    best = report["examples"]["Selected, highest scores"]
    assert len(best) == 6
    for sample_id in best:
        assert html.escape(captions[sample_id], quote=True) in text


def test_conversation_examples_show_every_round(tmp_path):
    from conftest import make_conversations
    from selector.report.inputs import read_example_texts

    texts, images, note = read_example_texts(make_conversations(tmp_path), None)
    assert texts["a1"] == ("Q: What is in the picture?\nA: A red square.\n"
                           "Q: What colour is it?\nA: Red.")
    assert texts["b2"] == "Q: Describe the image.\nA: A blue field."
    assert images["a1"] == tmp_path / "imgs" / "a1.jpg" and "conversations.json" in note
