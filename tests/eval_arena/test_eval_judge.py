"""eval_arena.judge (GPT-judged open-ended evaluation) against the scripted loopback OpenAI server."""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from statistics import fmean
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest

from openai_server import FakeOpenAI
from eval_arena.judge import CACHE_NAME, GptJudge, judge
from eval_arena.judge_cli import add_judge_parser
from eval_arena.judge_prompts import (RULE_WITH_CONTEXT, RULE_WITHOUT_CONTEXT, SYSTEM_PROMPT,
                                      parse_pair)
from selector.core.errors import InputError
from selector.core.cache import Store

SENTINEL = "sk-test-SENTINEL-judge-77"
REPO = Path(__file__).resolve().parents[2]
LAST_ANSWER = "[Assistant 2]\n"


class JudgeServer(FakeOpenAI):
    """Scripted by the markers of the model's answer being judged only (the last Assistant 2
    block): a later round's prompt also shows the earlier answers and their markers."""

    def reply_for(self, content: str, count_attempt: bool = True):
        return super().reply_for(content[content.rfind(LAST_ANSWER):], count_attempt)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    with JudgeServer() as fake:
        yield fake


def write_jsonl(path: Path, rows: Sequence[Dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def gpt(server: Optional[FakeOpenAI] = None, **settings: Any) -> GptJudge:
    defaults: Dict[str, Any] = dict(progress=False, max_retries=0, timeout=10.0,
                                    poll_seconds=0.02)
    if server is not None:
        defaults["base_url"] = server.base_url
    defaults.update(settings)
    return GptJudge(**defaults)


def marked(text: str, pair: Tuple[float, float]) -> str:
    """An answer whose judgement the server scripts as ``pair`` (reference, model)."""
    return f"{text} [[score={pair[0]:g} {pair[1]:g}]]"


class Bench:
    """A generated benchmark: questions (single- and multi-round), references, answers and the
    scores the judge is scripted to give, drawn at random."""

    def __init__(self, root: Path, seed: int = 0, single: int = 4, multi: Sequence[int] = (2, 3),
                 pairs: Optional[Dict[Tuple[int, int], Tuple[float, float]]] = None) -> None:
        rng = random.Random(seed)
        self.root = root
        self.questions: List[Dict[str, Any]] = []
        self.references: List[Dict[str, Any]] = []
        self.answers: List[Dict[str, Any]] = []
        self.pairs: Dict[Tuple[int, int], Tuple[float, float]] = {}
        self.category: Dict[int, str] = {}
        shapes = [1] * single + list(multi)
        for qid, rounds in enumerate(shapes):
            category = ("conv", "detail", "complex")[qid % 3] if rounds == 1 else "multi"
            self.category[qid] = category
            questions = [f"Question {r} about image {qid}?" for r in range(1, rounds + 1)]
            record: Dict[str, Any] = {"question_id": qid, "image": f"{qid:03d}.jpg",
                                      "category": category}
            if rounds == 1:
                record["text"] = "<image>\n" + questions[0]
            else:
                record["rounds"] = questions
            self.questions.append(record)
            for number in range(1, rounds + 1):
                pair = (pairs or {}).get((qid, number)) or (float(rng.randint(5, 10)),
                                                            float(rng.randint(1, 10)))
                self.pairs[(qid, number)] = pair
                self.references.append({"question_id": qid, "round": number,
                                        "text": f"Reference answer {qid}.{number}."})
                self.answers.append({"question_id": qid, "round": number,
                                     "text": marked(f"Model answer {qid}.{number}.", pair)})

    def write(self, answers: Optional[List[Dict[str, Any]]] = None) -> Dict[str, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        return {"questions": write_jsonl(self.root / "questions.jsonl", self.questions),
                "references": write_jsonl(self.root / "references.jsonl", self.references),
                "answers": write_jsonl(self.root / "answers.jsonl",
                                       self.answers if answers is None else answers)}

    def expected(self, keep=lambda key: True) -> Dict[str, Any]:
        """The relative scores, computed here from the scripted pairs."""
        def relative(keys):
            keys = [k for k in keys if keep(k)]
            if not keys:
                return None
            return fmean(self.pairs[k][1] for k in keys) / fmean(self.pairs[k][0] for k in keys) \
                * 100
        keys = list(self.pairs)
        return {"overall": relative(keys),
                "categories": {c: relative([k for k in keys if self.category[k[0]] == c])
                               for c in set(self.category.values())},
                "rounds": {str(r): relative([k for k in keys if k[1] == r])
                           for r in {k[1] for k in keys}}}


def run(files: Dict[str, Path], out: Path, judge_model: GptJudge, **options: Any
        ) -> Dict[str, Any]:
    return judge(files["questions"], files["answers"], out, references=files["references"],
                 judge_model=judge_model, **options)


def reviews(out: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in (out / "reviews.jsonl").read_text().splitlines()]


def chat_bodies(server: FakeOpenAI) -> List[Dict[str, Any]]:
    return [request.json() for request in server.chat_requests]


# ------------------------------------------------------------------------------ the metric

def test_single_and_multi_round_relative_scores(server, tmp_path):
    bench = Bench(tmp_path / "bench", seed=3)
    files = bench.write()
    server.latency = 0.02
    summary = run(files, tmp_path / "out", gpt(server, concurrency=3))

    expected = bench.expected()
    assert summary["relative_score"] == pytest.approx(expected["overall"])
    assert {c: g["relative_score"] for c, g in summary["categories"].items()} == \
        pytest.approx(expected["categories"])
    assert {r: g["relative_score"] for r, g in summary["rounds"].items()} == \
        pytest.approx(expected["rounds"])
    assert set(summary["rounds"]) == {"1", "2", "3"}
    assert summary["reference_mean"] == pytest.approx(fmean(p[0] for p in bench.pairs.values()))
    assert (summary["items"], summary["judged"], summary["flagged"], summary["failed"],
            summary["missing"]) == (9, 9, 0, 0, 0)
    assert summary["complete"] and summary["judge"]["model"] == "gpt-4-0613"
    rows = reviews(tmp_path / "out")
    assert {(r["question_id"], r["round"]): (r["reference_score"], r["model_score"])
            for r in rows} == bench.pairs
    assert all(r["status"] == "judged" and r["reply"] for r in rows)
    assert 1 < server.max_in_flight <= 3
    assert summary["questions"] == 6
    written = b"".join(f.read_bytes() for f in (tmp_path / "out").rglob("*") if f.is_file())
    assert SENTINEL.encode() not in written  # the key is in no output and not in the cache

    bodies = chat_bodies(server)
    assert len(bodies) == 9
    assert all(b["model"] == "gpt-4-0613" and b["temperature"] == 0.2 and b["max_tokens"] == 1024
               and b["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
               for b in bodies)
    contents = [b["messages"][1]["content"] for b in bodies]
    single = ("[Question]\nQuestion 1 about image 0?\n\n[Assistant 1]\nReference answer 0.1.\n\n"
              "[End of Assistant 1]\n\n[Assistant 2]\n" + marked("Model answer 0.1.",
                                                                bench.pairs[(0, 1)])
              + "\n\n[End of Assistant 2]\n\n[System]\n" + RULE_WITHOUT_CONTEXT + "\n\n")
    assert single in contents  # LLaVA's layout; no [Context] without a context
    [third] = [c for c in contents if "(round 3)" in c]
    mine, theirs = third.index("[Assistant 2's conversation]"), \
        third.index("[Assistant 1's conversation]")
    assert theirs < mine
    for number in (1, 2, 3):  # each assistant's conversation holds its own earlier answers
        assert third.index(f"Question {number} about image 5?", mine) > mine
        assert f"Reference answer 5.{number}." in third[theirs:mine]
        assert f"Model answer 5.{number}." in third[mine:]
        assert f"Model answer 5.{number}." not in third[:mine]


def test_context_is_shown_with_llavas_rule(server, tmp_path):
    bench = Bench(tmp_path, single=2, multi=(2,))
    files = bench.write()
    context = write_jsonl(tmp_path / "context.jsonl", [
        {"image": f"{q:03d}.jpg", "caption": [f"Caption {q} a.", f"Caption {q} b."]}
        for q in range(3)])
    summary = judge(files["questions"], files["answers"], tmp_path / "out",
                    references=files["references"], context=context, judge_model=gpt(server))
    assert summary["relative_score"] == pytest.approx(bench.expected()["overall"])
    contents = [b["messages"][1]["content"] for b in chat_bodies(server)]
    assert any(c.startswith("[Context]\nCaption 0 a.\nCaption 0 b.\n\n[Question]\n")
               and c.endswith(f"[System]\n{RULE_WITH_CONTEXT}\n\n") for c in contents)
    assert sum(c.startswith("[Context]\nCaption 2 a.") for c in contents) == 2


# ------------------------------------------------------------------- cache and resumption

def test_rerun_sends_nothing_and_changes_resend_only_what_changed(server, tmp_path):
    bench = Bench(tmp_path / "bench", single=2, multi=(3,))
    files = bench.write()
    first = run(files, tmp_path / "out", gpt(server))
    sent = len(server.chat_requests)
    assert sent == 5

    again = run(files, tmp_path / "out", gpt(server))
    assert len(server.chat_requests) == sent  # all cached
    assert again == first

    answers = [dict(a) for a in bench.answers]
    round_2 = next(a for a in answers if (a["question_id"], a["round"]) == (2, 2))
    round_2["text"] = marked("A better answer.", (9, 9))
    files = bench.write(answers)
    run(files, tmp_path / "out", gpt(server))
    new = chat_bodies(server)[sent:]
    # round 2 changed, and round 3 shows it as context: both asked again, nothing else
    assert len(new) == 2
    assert all("A better answer." in b["messages"][1]["content"] for b in new)
    assert [(r["question_id"], r["round"]) for r in reviews(tmp_path / "out")] == \
        [(0, 1), (1, 1), (2, 1), (2, 2), (2, 3)]
    assert reviews(tmp_path / "out")[3]["model_score"] == 9.0

    run(files, tmp_path / "other-out", gpt(server), cache_dir=tmp_path / "out")
    assert len(server.chat_requests) == sent + 2  # a shared cache serves another output
    run(files, tmp_path / "out", gpt(server, model="gpt-4o"))
    assert len(server.chat_requests) == sent + 2 + 5  # another judge model judges anew


KILLED_RUN = [sys.executable, "-m", "eval_arena.judge_cli", "--concurrency", "2",
              "--max-retries", "0"]


def test_resume_after_sigkill_loses_nothing_judged(tmp_path):
    bench = Bench(tmp_path / "bench", seed=7, single=24, multi=(3, 3))
    files = bench.write()
    out = tmp_path / "out"
    with JudgeServer(latency=0.1) as server:
        child = subprocess.Popen(
            KILLED_RUN + ["--questions", files["questions"], "--references",
                          files["references"], "--answers", files["answers"], "--out", out,
                          "--base-url", server.base_url],
            cwd=str(REPO), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while len(server.chat_requests) < 10 and time.time() < deadline \
                    and child.poll() is None:
                time.sleep(0.01)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.wait(10)
        assert child.returncode == -signal.SIGKILL
        with Store(out) as store:
            kept = store.count(CACHE_NAME)
        assert 0 < kept < 30 and not (out / "summary.json").exists()
        sent_before = len(server.chat_requests)

        summary = run(files, out, gpt(server, concurrency=8))
        assert len(server.chat_requests) - sent_before == 30 - kept  # nothing judged is resent
    assert summary["judged"] == 30
    assert summary["relative_score"] == pytest.approx(bench.expected()["overall"])


# ------------------------------------------------------------------------------- problems

def test_unparseable_replies_are_flagged_excluded_and_cached(server, tmp_path):
    bench = Bench(tmp_path / "bench", seed=1, single=4, multi=(2,))
    answers = [dict(a) for a in bench.answers]
    answers[1]["text"] = "No scores here. [[garbage]]"
    answers[2]["text"] = "Out of scale. [[score=11 4]]"
    files = bench.write(answers)
    summary = run(files, tmp_path / "out", gpt(server))
    bad = {(0 + 1, 1), (2, 1)}
    assert (summary["judged"], summary["flagged"]) == (4, 2)
    assert summary["relative_score"] == pytest.approx(
        bench.expected(keep=lambda key: key not in bad)["overall"])
    rows = {(r["question_id"], r["round"]): r for r in reviews(tmp_path / "out")}
    assert rows[(1, 1)]["status"] == "flagged" and "not two scores" in rows[(1, 1)]["problem"]
    assert rows[(1, 1)]["reply"].startswith("I am unable to rate")  # the raw reply is kept
    assert rows[(1, 1)]["model_score"] is None
    assert rows[(2, 1)]["problem"] == "score 11 is outside 1..10"
    assert summary["categories"]["detail"]["flagged"] == 1

    sent = len(server.chat_requests)
    run(files, tmp_path / "out", gpt(server))
    assert len(server.chat_requests) == sent  # a flagged reply was paid for: cached
    run(files, tmp_path / "out", gpt(server), retry_flagged=True)
    assert len(server.chat_requests) == sent + 2


def test_requests_without_reply_fail_and_are_retried(server, tmp_path):
    bench = Bench(tmp_path / "bench", single=3, multi=())
    answers = [dict(a) for a in bench.answers]
    answers[0]["text"] = "Server trouble. [[500]]"
    files = bench.write(answers)
    summary = run(files, tmp_path / "out", gpt(server))
    assert (summary["judged"], summary["failed"], summary["complete"]) == (2, 1, False)
    [failed] = [r for r in reviews(tmp_path / "out") if r["status"] == "failed"]
    assert failed["question_id"] == 0 and failed["problem"].startswith("HTTP 500")
    sent = len(server.chat_requests)
    run(files, tmp_path / "out", gpt(server))
    assert len(server.chat_requests) == sent + 1  # only the failed one is asked again


def test_rejected_key_is_one_line(server, tmp_path):
    bench = Bench(tmp_path / "bench", single=3, multi=())
    answers = [dict(a) for a in bench.answers]
    answers[1]["text"] = "[[401]]"
    files = bench.write(answers)
    result = subprocess.run(
        [sys.executable, "-m", "eval_arena.judge_cli", "--questions", str(files["questions"]),
         "--references", str(files["references"]), "--answers", str(files["answers"]),
         "--out", str(tmp_path / "out"), "--base-url", server.base_url, "--max-retries", "0"],
        cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("igpt4: error:")]
    assert "gpt judge: HTTP 401" in line and SENTINEL not in result.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_key_is_an_input_error_and_dry_run_needs_none(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # the chars/4 count, whatever is installed
    files = Bench(tmp_path / "bench", single=2, multi=(2,)).write()
    estimate = run(files, tmp_path / "out", gpt(), dry_run=True)
    assert (estimate["items"], estimate["cached"], estimate["requests"]) == (4, 0, 4)
    assert estimate["token_count_method"] == "chars/4"
    assert estimate["output_tokens"] == 4 * 200
    assert estimate["cost_usd"] == pytest.approx(
        (estimate["input_tokens"] * 30 + 800 * 60) / 1e6, abs=1e-4)
    assert not (tmp_path / "out").exists()  # nothing written, nothing sent
    with pytest.raises(InputError) as error:
        run(files, tmp_path / "out", gpt())
    assert "OPENAI_API_KEY" in str(error.value) and "\n" not in str(error.value)


def test_dry_run_counts_only_what_is_not_cached(server, tmp_path):
    bench = Bench(tmp_path / "bench", single=3, multi=())
    files = bench.write()
    run(files, tmp_path / "out", gpt(server))
    more = Bench(tmp_path / "bench", single=5, multi=())
    files = more.write()
    estimate = run(files, tmp_path / "out", gpt(server), dry_run=True)
    assert (estimate["items"], estimate["cached"], estimate["requests"]) == (5, 3, 2)
    assert len(server.chat_requests) == 3


def test_batch_mode_gives_the_same_scores(server, tmp_path):
    bench = Bench(tmp_path / "bench", seed=5, single=3, multi=(2,))
    files = bench.write()
    summary = run(files, tmp_path / "out", gpt(server, mode="batch"))
    assert server.chat_requests == [] and server.batch_creations == 1
    assert summary["relative_score"] == pytest.approx(bench.expected()["overall"])
    assert list((tmp_path / "out" / "gpt_batches").iterdir())
    online = run(files, tmp_path / "out", gpt(server))  # the same judgements: cached
    assert online == summary and server.chat_requests == []


# ---------------------------------------------------------------------------------- inputs

def test_conversations_carry_references_and_arena_answers_match(server, tmp_path):
    pairs = {(0, 1): (8.0, 4.0), (1, 1): (6.0, 6.0), (2, 1): (9.0, 3.0), (2, 2): (7.0, 7.0)}
    questions = write_jsonl(tmp_path / "questions.jsonl", [
        {"question_id": "q0", "image": "img/0.jpg", "text": "What is shown?"},
        {"question_id": "q1", "image": "img/1.jpg", "text": "What is shown?"},
        {"id": "q2", "image": "img/2.jpg", "category": "multi", "conversations": [
            {"from": "human", "value": "<image>\nFirst?"}, {"from": "gpt", "value": "Ref 1."},
            {"from": "human", "value": "Second?"}, {"from": "gpt", "value": "Ref 2."}]}])
    references = write_jsonl(tmp_path / "references.jsonl", [
        {"question_id": "q0", "text": "Ref 0."}, {"question_id": "q1", "text": "Ref 1."},
        {"question_id": "q2", "round": 1, "text": "Ref 1."},
        {"question_id": "q2", "round": 2, "text": "Ref 2."}])
    arena = tmp_path / "gqa.json"  # the Arena's answers file: no question ids
    arena.write_text(json.dumps([
        {"question": "What is shown?", "answer": marked("A cat.", pairs[(0, 1)]),
         "gt_answers": ["cat"], "image_path": "/data/img/0.jpg", "model_name": "m"},
        {"question": "What is shown?", "answer": marked("A dog.", pairs[(1, 1)]),
         "gt_answers": ["dog"], "image_path": "/data/img/1.jpg", "model_name": "m"},
        {"question": "Unrelated?", "answer": "x", "gt_answers": [], "image_path": "z.jpg",
         "model_name": "m"}]))
    answers = tmp_path / "answers.jsonl"
    write_jsonl(answers, [{"question_id": "q2", "round": n, "text": marked(f"A{n}.", pairs[
        (2, n)])} for n in (1, 2)])
    conversation = judge(questions, answers, tmp_path / "a", judge_model=gpt(server),
                         allow_missing=True)  # q0, q1 have no answers in this file
    assert (conversation["judged"], conversation["missing"]) == (2, 2)
    assert conversation["relative_score"] == pytest.approx((3 + 7) / (9 + 7) * 100)
    from_file = judge(questions, answers, tmp_path / "b", references=references,
                      judge_model=gpt(server), allow_missing=True)
    assert from_file["relative_score"] == conversation["relative_score"]

    single = judge(questions, arena, tmp_path / "c", references=references,
                   judge_model=gpt(server), allow_missing=True)
    assert (single["judged"], single["missing"]) == (2, 2)
    assert single["inputs"]["unmatched_answers"] == 1
    assert single["relative_score"] == pytest.approx((4 + 6) / (8 + 6) * 100)
    assert single["categories"]["default"]["judged"] == 2


def test_missing_answers_stop_the_run_unless_allowed(server, tmp_path):
    bench = Bench(tmp_path / "bench", single=2, multi=(3,))
    answers = [a for a in bench.answers if (a["question_id"], a["round"]) != (2, 2)]
    files = bench.write(answers)
    with pytest.raises(InputError) as error:
        run(files, tmp_path / "out", gpt(server))
    assert "answers.jsonl" in str(error.value) and "question 2: no answer for round 2" in \
        str(error.value)
    assert server.chat_requests == []
    summary = run(files, tmp_path / "out", gpt(server), allow_missing=True)
    # round 3 cannot be judged without round 2, its context
    assert (summary["judged"], summary["missing"], summary["complete"]) == (3, 2, False)
    assert summary["rounds"]["3"]["missing"] == 1
    assert [(r["round"], r["status"]) for r in reviews(tmp_path / "out")[2:]] == \
        [(1, "judged"), (2, "missing"), (3, "missing")]  # in the questions' order
    assert summary["relative_score"] == pytest.approx(
        bench.expected(keep=lambda key: key not in {(2, 2), (2, 3)})["overall"])


@pytest.mark.parametrize("rows, fragment", [
    ([{"question_id": 0, "text": "a"}, {"question_id": 0, "text": "b"}],
     "line 2: question 0 round 1 answered twice (first at line 1)"),
    ([{"question_id": 0, "round": 0, "text": "a"}], "rounds count from 1"),
    ([{"question_id": 0, "round": 2, "text": "a"}], "question 0 has 1 round(s), not 2"),
    ([{"question_id": 0, "reply": "a"}], "line 1: no answer text"),
])
def test_bad_answer_files_name_file_and_line(tmp_path, rows, fragment):
    files = Bench(tmp_path, single=1, multi=()).write(rows)
    with pytest.raises(InputError) as error:
        run(files, tmp_path / "out", gpt(), dry_run=True)
    assert str(files["answers"]) in str(error.value) and fragment in str(error.value)


def test_bad_question_files(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"question_id": 1, "text": "a"}\n{"question_id": 1, ')
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "text": "x"}])
    with pytest.raises(InputError, match=r"q\.jsonl: line 2: malformed JSON"):
        judge(tmp_path / "q.jsonl", answers, tmp_path / "out", references=answers, dry_run=True)
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "text": "a"},
                                       {"question_id": 1, "text": "b"}])
    with pytest.raises(InputError, match="question 1 again"):
        judge(tmp_path / "q.jsonl", answers, tmp_path / "out", references=answers, dry_run=True)
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "text": "a"}])
    with pytest.raises(InputError, match="give a references file"):
        judge(tmp_path / "q.jsonl", answers, tmp_path / "out", dry_run=True)


# ------------------------------------------------------------------------- parsing and CLI

@pytest.mark.parametrize("reply, scores", [
    ("8 7\nAssistant 1 is better.", (8.0, 7.0)),
    ("8, 7.5", (8.0, 7.5)),
    ("9,6", (9.0, 6.0)),
    ("\n  10 1  \nwhy", (10.0, 1.0)),
])
def test_score_pairs(reply, scores):
    pair = parse_pair(reply)
    assert pair.ok and (pair.reference, pair.model) == scores


@pytest.mark.parametrize("reply, problem", [
    ("Assistant 1: 8\nAssistant 2: 7", "is not two scores"),
    ("8 7 6", "is not two scores"),
    ("eight seven", "is not two numbers"),
    ("8 0", "score 0 is outside 1..10"),
    ("nan 5", "score nan is outside 1..10"),
    ("", "empty reply"),
    (None, "empty reply"),
])
def test_unusable_replies_are_flagged(reply, problem):
    pair = parse_pair(reply)
    assert not pair.ok and problem in pair.problem and pair.model is None


def test_cli_parser_defaults():
    parser = argparse.ArgumentParser(prog="igpt4 eval")
    add_judge_parser(parser.add_subparsers(dest="eval_command", required=True))
    args = parser.parse_args(["judge", "--questions", "q", "--answers", "a", "--out", "o"])
    assert (args.model, args.concurrency, args.temperature, args.max_tokens, args.mode) == \
        ("gpt-4-0613", 16, 0.2, 1024, "online")
    assert args.references is None and not args.dry_run and not args.allow_missing
