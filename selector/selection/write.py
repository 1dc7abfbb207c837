"""Writing a selection: ``OUT/filter_cap.json`` (+ images), ``selected.txt`` and ``manifest.json``,
swapped in as a whole, and the rule for reusing an ``--out``.

From a LLaVA-style conversation JSON (``data_dir`` a file) the selection is
``OUT/conversations.json`` in the same format (text-only samples kept, without an ``image`` key)
with the images under ``OUT/image/`` and each ``image`` reference prefixed ``image/``, so the
folder is self-contained: read it with its own folder as the image root."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from selector.core.atomic import publish_folder, write_text
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, write_json
from selector.core.provenance import log, package_versions
from selector.data.samples import CONVERSATIONS


#: what ``igpt4 select`` writes into its --out (and ``igpt4 report`` beside it, by default)
SELECTION_FILES = ("filter_cap.json", "conversations.json", "image", "selected.txt",
                   "skipped.json", "manifest.json")


_REPORT_FILE = re.compile(r".+\.html?|.+_data\.json|"
                          r".+_(indicators|correlations|clusters|cross_validation)\.png")


_LEFT_BY_A_KILLED_WRITE = re.compile(r"\..+\.(tmp|link)")  # selector.atomic's temporary names


def _is_selection(folder: Path) -> bool:
    """Whether ``folder`` holds a selection this project wrote (its manifest.json)."""
    from selector.core.jsonio import read_json

    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest, _ = read_json(folder / "manifest.json")
    except InputError:
        return False
    return (isinstance(manifest, dict) and isinstance(manifest.get("samples"), list)
            and isinstance(manifest.get("settings"), dict)
            and manifest["settings"].get("command") in ("select", "reference-select"))


def check_reusable_out(out: Path) -> None:
    """A selection's --out must end up holding exactly the new selection. An absent or empty
    folder, or a previous selection (whose files, and a report made into it, are replaced as a
    whole), may be reused; a file, a non-empty folder that is no selection, or a previous selection
    that also holds files we did not write, is refused: replacing it would delete them."""
    from selector.core.atomic import os_error_line

    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise InputError(f"{out}: --out exists and is not a folder")
    try:
        entries = sorted(entry.name for entry in out.iterdir())
    except OSError as exc:
        raise os_error_line(out, exc, "cannot read") from None
    if not entries:
        return
    if not _is_selection(out):
        raise InputError(f"{out}: --out is a non-empty folder that holds no selection "
                         "(manifest.json of igpt4 select); give a new or empty folder")
    foreign = [name for name in entries if name not in SELECTION_FILES
               and not _REPORT_FILE.fullmatch(name) and not _LEFT_BY_A_KILLED_WRITE.fullmatch(name)]
    if foreign:
        raise InputError(f"{out / foreign[0]}: --out holds a previous selection and this, which "
                         "igpt4 select did not write (it would be deleted); move it or give "
                         "another --out")


def write_selection(out: PathLike, ids: List[str], scores: np.ndarray, selected: List[str],
                    settings: Dict[str, Any], cluster_of: Optional[Dict[str, str]] = None,
                    captions: Optional[Dict[str, str]] = None, data_dir: Optional[PathLike] = None,
                    image_mode: str = "link", skip_invalid: bool = False,
                    details: Optional[Dict[str, Any]] = None,
                    image_root: Optional[PathLike] = None) -> Path:
    """``OUT/filter_cap.json`` (+ ``OUT/image/`` when the data folder is given; from a
    conversation JSON ``data_dir``, with ``image_root`` its images' folder:
    ``OUT/conversations.json``) and ``OUT/manifest.json`` with every sample's score, cluster and
    whether it was selected.

    The selection is written into a temporary folder beside ``out`` and swapped in when complete:
    ``out`` then holds exactly this selection (no file of a previous one, see
    :func:`check_reusable_out`), and a failed or killed run leaves the previous one as it was."""
    import shutil

    from selector.core.atomic import os_error_line
    from selector.core.overlap import refuse_overlap

    out = Path(out)
    images = image_root  # a conversation JSON's images (by default beside it) are input too
    if images is None and data_dir is not None and Path(data_dir).is_file() \
            and Path(data_dir).name != "filter_cap.json":
        images = Path(data_dir).parent
    refuse_overlap({"--out": out}, {"--data": data_dir, "--image-root": images})  # as a library too
    check_reusable_out(out)
    staging = out.with_name(f".{out.name}.{os.getpid()}.new")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except OSError as exc:
        raise os_error_line(out, exc) from None
    try:
        _write_selection_files(staging, out, ids, scores, selected, settings, cluster_of,
                               captions, data_dir, image_mode, skip_invalid, details, image_root)
        publish_folder(staging, out)
    except InputError as exc:  # name the folder the user gave, not the hidden staging one
        raise InputError(str(exc).replace(str(staging), str(out))) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_selection_files(out: Path, final: Path, ids: List[str], scores: np.ndarray,
                           selected: List[str], settings: Dict[str, Any],
                           cluster_of: Optional[Dict[str, str]],
                           captions: Optional[Dict[str, str]], data_dir: Optional[PathLike],
                           image_mode: str, skip_invalid: bool,
                           details: Optional[Dict[str, Any]],
                           image_root: Optional[PathLike] = None) -> None:
    """The files of :func:`write_selection`, into ``out`` (the staging folder; ``final`` is where
    they will be, named in messages)."""
    from selector.data.samples import (read_cc_sbu_align, read_conversations, write_cc_sbu_align,
                                       write_conversation_folder)

    if data_dir is not None:
        conversations = Path(data_dir).is_file() and Path(data_dir).name != "filter_cap.json"
        pool = read_conversations(data_dir, image_root, skip_invalid) if conversations \
            else read_cc_sbu_align(data_dir, skip_invalid=skip_invalid)
        replaced = os.path.realpath(final)  # the previous selection there goes when this is done
        for sample in pool.samples:
            if sample.image is None:  # text-only: nothing to place
                continue
            image = os.path.realpath(sample.image)
            if os.path.commonpath([replaced, image]) == replaced:
                raise InputError(f"{final / 'image' / Path(image).name}: is the source image "
                                 f"{sample.image} itself (the data links into the --out that "
                                 "would be replaced); write the selection elsewhere")
        if pool.skipped:
            pool.write_skip_report(out / "skipped.json")
            log(f"skipped {len(pool.skipped)} invalid samples of {data_dir} "
                f"(report: {final / 'skipped.json'})")
        known = set(pool.ids)
        missing = [i for i in selected if i not in known]
        if missing:
            raise InputError(f"{pool.source}: selected sample {missing[0]!r} is not in the data "
                             f"({len(missing)} missing)")
        if pool.kind == CONVERSATIONS:
            text_only = write_conversation_folder(pool.subset(selected).samples, out, image_mode)
            if text_only:
                log(f"selection keeps {text_only} text-only samples (no image) in "
                    "conversations.json")
        else:
            write_cc_sbu_align(pool.subset(selected).samples, out, image_mode)
    elif captions is not None:
        missing = [i for i in selected if i not in captions]
        if missing:
            raise InputError(f"no caption for selected sample {missing[0]!r}")
        write_json(out / "filter_cap.json",
                   {"annotations": [{"image_id": i, "caption": captions[i]} for i in selected]},
                   indent=4)
    else:
        log("no data folder or captions given: wrote the selected ids only (selected.txt)")
    from selector.data.samples import check_sample_ids

    check_sample_ids(selected, "selection")  # one id per line: no id may hold a line break
    write_text(out / "selected.txt", "".join(f"{i}\n" for i in selected))
    chosen = set(selected)
    cluster_of = cluster_of or {}
    write_json(out / "manifest.json", {
        "settings": settings,
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "num_selected": len(selected),
        "selected": selected,
        **(details or {}),
        "samples": [{"id": sample_id, "score": float(score), "cluster": cluster_of.get(sample_id),
                     "selected": sample_id in chosen}
                    for sample_id, score in zip(ids, scores)],
    })
