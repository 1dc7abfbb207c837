"""selector.app.toy.conversations and .judge_server: the toy LLaVA-format conversation pool (with
planted bad conversations), the held-out judge set, its answering by a MiniGPT-4-shaped tester
and the scripted toy judge behind ``igpt4 eval judge``."""
from __future__ import annotations

import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

import lavis_plugins
from conftest import run_cli
from eval_arena.judge_prompts import parse_pair, review_messages
from eval_arena.minigpt4_tester import arena_prompt
from eval_arena.testers import ScriptedTester
from selector.app.toy import conversations as conv
from selector.app.toy.judge_server import TOY_JUDGE_MODEL, ToyJudgeServer, review_reply, toy_scores
from selector.app.toy.world import COLOURS, COUNT_WORDS, SHAPES
from selector.core.errors import InputError
from selector.data.samples import read_pool

# the tests' own reading of an answer: written against English, not against the module's wording
KINDS = {"colour": sorted(COLOURS), "count": list(COUNT_WORDS), "shape": list(SHAPES)}


def words_of_kind(text: str, kind: str):
    found = set()
    for word in re.findall(r"[a-z]+", text.lower()):
        word = word[:-1] if kind == "shape" and word.endswith("s") else word
        if word in KINDS[kind]:
            found.add(word)
    return found


def right(answer: str, kind: str, word: str, question: str) -> bool:
    """The answer holds the one-word answer and no other word of the kind the question asks."""
    said = words_of_kind(answer, kind) - words_of_kind(question, kind)
    return said == {word}


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return conv.make_toy_conversations(tmp_path_factory.mktemp("conv") / "pool", n=48, seed=5)


def records_of(pool):
    return json.loads(pool.json_path.read_text(encoding="utf-8"))


def planted_of(pool):
    return json.loads((pool.folder / "planted.json").read_text(encoding="utf-8"))


def test_the_pool_reads_through_read_pool_with_exact_planted_counts(pool):
    data = read_pool(pool.json_path, pool.image_root)
    assert data.kind == "conversations" and data.skipped == [] and len(data) == 48
    assert [s.id for s in data.samples] == pool.ids
    assert all(s.image == pool.image_root / f"{s.id}.jpg" and s.image.is_file()
               for s in data.samples)
    assert all(3 <= len(s.rounds) <= 4 for s in data.samples)
    assert sum(pool.bad.values()) == 12  # round(0.25 * 48)
    assert Counter(k for k in pool.kinds.values() if k) == {kind: 3 for kind in conv.BAD_KINDS}
    again = conv.load_toy_conversations(pool.folder)
    assert (again.ids, again.bad, again.kinds, again.truth) == (pool.ids, pool.bad, pool.kinds,
                                                                pool.truth)


def test_every_bad_conversation_answers_a_question_wrongly_and_good_ones_never(pool):
    planted = planted_of(pool)
    describe_rounds = 0
    for record in records_of(pool):
        entry = planted[record["id"]]
        turns = record["conversations"]
        questions, answers = [t["value"] for t in turns[::2]], [t["value"] for t in turns[1::2]]
        assert questions[0].startswith("<image>\n")
        wrong = []
        for number, (question, answer, kind, word) in enumerate(zip(
                questions, answers, entry["round_kinds"], entry["answer_words"]), 1):
            if kind == conv.DESCRIBE:
                describe_rounds += 1
                continue
            if not right(answer, kind, word, question):
                wrong.append(number)
            assert right(entry["clean_answers"][number - 1], kind, word, question)
        if not entry["bad"]:
            assert wrong == [] and entry["bad_rounds"] == [] and answers == entry["clean_answers"]
        else:
            assert wrong and set(wrong) <= set(entry["bad_rounds"]), record["id"]
            changed = [n for n, (a, c) in enumerate(zip(answers, entry["clean_answers"]), 1)
                       if a != c]
            assert changed == entry["bad_rounds"]
    assert describe_rounds > 5  # some conversations describe the image too


def test_a_seed_gives_the_same_pool_and_conversation_i_does_not_depend_on_n(tmp_path):
    first = conv.make_toy_conversations(tmp_path / "a", n=12, seed=3)
    again = conv.make_toy_conversations(tmp_path / "b", n=12, seed=3)
    for name in ("conversations.json", "planted.json", "image/000007.jpg"):
        assert (first.folder / name).read_bytes() == (again.folder / name).read_bytes()
    other = conv.make_toy_conversations(tmp_path / "c", n=12, seed=4)
    assert other.json_path.read_bytes() != first.json_path.read_bytes()
    small = conv.make_toy_conversations(tmp_path / "d", n=5, seed=3, bad_fraction=0.0)
    large = conv.make_toy_conversations(tmp_path / "e", n=9, seed=3, bad_fraction=0.0)
    assert records_of(large)[:5] == records_of(small)
    with pytest.raises(InputError, match="bad_fraction"):
        conv.make_toy_conversations(tmp_path / "f", n=4, bad_fraction=1.5)
    with pytest.raises(InputError, match="not a toy conversation pool"):
        conv.load_toy_conversations(tmp_path)


def test_the_conversation_dataset_lays_the_pool_out_for_minigpt4(pool):
    from lavis_plugins.datasets import ConversationDataset

    samples = read_pool(pool.json_path, pool.image_root).samples
    dataset = ConversationDataset(samples)
    record = records_of(pool)[0]
    questions = [t["value"].replace("<image>\n", "") for t in record["conversations"][::2]]
    item = dataset[0]
    assert item["conv_q"].split("!@#") == [f"<Img><ImageHere></Img> {questions[0]} "] + [
        f"{q} " for q in questions[1:]]
    assert item["conv_a"].split("!@#") == [t["value"] for t in record["conversations"][1::2]]
    assert item["image"].size == (64, 64)


def test_the_llava_conversations_builder_reads_the_pool(pool, tmp_path):
    if "lavis" not in lavis_plugins.available_hosts():
        pytest.skip("salesforce-lavis is not installed (make test installs it with --no-deps)")
    lavis_plugins.require_host()
    import yaml
    from lavis.datasets.builders import load_dataset

    lavis_plugins.register(["lavis"])
    config = tmp_path / "conv.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"llava_conversations": {
        "data_type": "images",
        "build_info": {"storage": str(pool.json_path), "image_root": str(pool.image_root)},
        "vis_processor": {"train": {"name": "blip2_image_train", "image_size": 32}}}}}))
    train = load_dataset("llava_conversations", cfg_path=str(config))["train"]
    assert [s.id for s in train.samples] == pool.ids and train.selection_folder is None
    item = train[1]
    assert tuple(item["image"].shape) == (3, 32, 32)
    assert item["conv_a"].split("!@#") == [t["value"] for t in
                                           records_of(pool)[1]["conversations"][1::2]]


# -- the toy judge ---------------------------------------------------------------------------

def test_the_toy_judge_rule():
    assert toy_scores("What colour is the circle?", "The circle is red.", "The circle is red.") \
        == (10, 10, "1 of 1 key words (red)")
    assert toy_scores("What colour is the circle?", "The circle is red.", "Red.")[1] == 10
    assert toy_scores("What colour is the circle?", "The circle is red.", "It is blue.")[1] == 1
    assert toy_scores("What colour is the circle?", "The circle is red.", "The circle is")[1] == 1
    assert toy_scores("What shape are the red objects?", "The red objects are circles.",
                      "They are circles.")[1] == 10
    assert toy_scores("What colour is the circle?", "The circle is red.", "Red or blue.")[1] == 7
    caption = "The image shows two red circles and a blue star on a plain white background."
    assert toy_scores("Describe the image.", caption, caption)[1] == 10
    half = toy_scores("Describe the image.", caption, "The image shows two red circles and")[1]
    looped = toy_scores("Describe the image.", caption, " ".join([caption] * 4))[1]
    assert 1 < half < 10 and looped == 7
    # the reference always scores 10; a prompt it cannot read is flagged, never scored
    messages = review_messages(["How many stars are there?", "What colour is the circle?"],
                               ["There are two stars.", "The circle is red."],
                               ["There are two stars.", "The circle is green."], "a caption")
    pair = parse_pair(review_reply(messages[-1][1]))
    assert (pair.reference, pair.model) == (10.0, 1.0)
    assert not parse_pair(review_reply("What is the capital of France?")).ok


def _answers_by_reference(judge_set):
    refs = {(row["question_id"], row["round"]): row["text"] for row in map(
        json.loads, judge_set.references.read_text(encoding="utf-8").splitlines())}
    questions = [json.loads(line) for line in
                 judge_set.questions.read_text(encoding="utf-8").splitlines()]
    return {(q["image"], text): refs[(q["question_id"], number)]
            for q in questions for number, text in enumerate(q["rounds"], 1)}


def _swap(text: str) -> str:
    """Every key word swapped for another of its kind (red -> another colour, two -> three,
    circle(s) -> another shape(s)), the rest of the sentence kept."""
    def other(match):
        word, plural = match.group(1), match.group(2) or ""
        for words in KINDS.values():
            if word in words:
                return words[(words.index(word) + 1) % len(words)] + plural
        return match.group(0)

    return re.sub(r"\b(%s)(s?)\b" % "|".join(w for ws in KINDS.values() for w in ws), other, text)


def _judge(judge_set, answers: Path, out: Path, server: ToyJudgeServer):
    return run_cli("eval", "judge", "--questions", judge_set.questions,
                   "--references", judge_set.references, "--context", judge_set.context,
                   "--answers", answers, "--out", out, "--base-url", server.base_url,
                   "--model", TOY_JUDGE_MODEL, "--concurrency", "4", "--max-retries", "0",
                   "--strict", env={"OPENAI_API_KEY": "toy",
                                    # dead proxies (a SOCKS one too): a judge on 127.0.0.1 is
                                    # reached directly, whatever the user's proxy settings
                                    "HTTP_PROXY": "http://127.0.0.1:9",
                                    "HTTPS_PROXY": "http://127.0.0.1:9",
                                    "ALL_PROXY": "socks5://127.0.0.1:9"})


def test_a_perfect_answerer_outscores_a_wrong_one_through_igpt4_eval_judge(tmp_path, capfd):
    judge_set = conv.make_judge_set(tmp_path / "judge", n=10, seed=2)
    questions = [json.loads(line) for line in
                 judge_set.questions.read_text(encoding="utf-8").splitlines()]
    assert len(questions) == 10 and all(2 <= len(q["rounds"]) <= 3 for q in questions)
    assert all((judge_set.images / q["image"]).is_file() for q in questions)
    table = _answers_by_reference(judge_set)

    def reference(image: str, question: str) -> str:
        return table[(os.path.basename(image), question.rsplit("###Human: ", 1)[-1])]

    perfect = ScriptedTester(reference)
    wrong = ScriptedTester(lambda image, question: _swap(reference(image, question)))
    perfect_answers = conv.answer_judge_set(perfect, judge_set, tmp_path / "perfect.jsonl")
    conv.answer_judge_set(wrong, judge_set, tmp_path / "wrong.jsonl", batch_size=3)

    # a later round carries the earlier ones: MiniGPT-4's own multi-round conversation
    first = questions[0]
    asked = [question for image, question in perfect.calls
             if os.path.basename(image) == first["image"]]
    answer_1 = table[(first["image"], first["rounds"][0])]
    assert asked[:2] == [first["rounds"][0],
                         f"{first['rounds'][0]}###Assistant: {answer_1}###Human: "
                         f"{first['rounds'][1]}"]
    assert arena_prompt(asked[1]).endswith(
        f"###Human: <Img><ImageHere></Img> {first['rounds'][0]}###Assistant: {answer_1}"
        f"###Human: {first['rounds'][1]}###Assistant:")
    rows = [json.loads(line) for line in perfect_answers.read_text().splitlines()]
    assert len(rows) == sum(len(q["rounds"]) for q in questions)
    assert {"question_id", "round", "text", "prompt"} <= set(rows[0])

    with ToyJudgeServer() as server:
        results = {name: _judge(judge_set, tmp_path / f"{name}.jsonl", tmp_path / f"out-{name}",
                                server) for name in ("perfect", "wrong")}
        assert server.replies == 2 * len(rows)
    for name, result in results.items():
        assert result.returncode == 0, result.stderr
    summaries = {name: json.loads((tmp_path / f"out-{name}" / "summary.json").read_text())
                 for name in results}
    assert summaries["perfect"]["relative_score"] == 100.0
    assert summaries["perfect"]["flagged"] == 0 and summaries["perfect"]["complete"]
    assert summaries["wrong"]["relative_score"] < 20 < summaries["perfect"]["relative_score"]
    assert set(summaries["perfect"]["rounds"]) >= {"1", "2", "3"}
    assert summaries["perfect"]["judge"]["model"] == TOY_JUDGE_MODEL
    review = json.loads((tmp_path / "out-wrong" / "reviews.jsonl").read_text().splitlines()[0])
    assert "Toy judge (scripted rule" in review["reply"]
    captured = capfd.readouterr()
    assert "Bearer" not in captured.out + captured.err  # the server logs no request
