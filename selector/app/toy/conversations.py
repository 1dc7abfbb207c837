"""Toy LLaVA-style conversations: a multi-round pool with planted bad conversations, a held-out
judge set (questions, reference answers, contexts) and the answering of it by a MiniGPT-4-shaped
tester, so ``igpt4 demo --kind conversations`` can fine-tune on conversations and score the result
with ``igpt4 eval judge`` (:mod:`.judge_server` is its toy judge).

Each drawing (:func:`.world.random_truth`) gets 3-4 rounds: questions of :func:`.questions.
questions_of`, answered with a short sentence holding the one-word answer ("The circle is red."),
and sometimes a describe round answered with the faithful caption (:func:`.world.caption_of`).
The planted bad kinds (:data:`BAD_KINDS`) all leave at least one question round whose answer does
not hold its one-word answer, so the conversation teaches a wrong answer to its question:

* ``wrong_answer``: one or more question rounds answered with a wrong word of the same kind
  (another colour, a count one off, another shape);
* ``off_topic``: every round answered with a caption of something else
  (:func:`.world.off_topic_caption`: no colour, shape or count word);
* ``truncated``: one or more question rounds cut just before the answer word ("The circle is"),
  and the describe round, if any, cut mid-sentence;
* ``repetitive``: one or more question rounds answered with the sentence's start looping without
  the answer word ("The circle is the circle is ..."), and the describe round, if any, with one
  sentence repeated many times.

Every conversation's clean draws come first from its own generator (:func:`.world.sample_rng`,
purpose ``"conversations"``), so conversation i is the same whatever n and whichever ones are
planted; the judge set draws from purpose ``"judge"``, disjoint from the pool and every model.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from selector.app.toy.questions import Question, questions_of
from selector.app.toy.world import (COLOURS, COUNT_WORDS, SHAPES, caption_of, deal_bad_kinds,
                                    draw, faulty_caption, off_topic_caption, random_truth,
                                    sample_rng)
from selector.core.atomic import atomic_open
from selector.core.errors import InputError
from selector.core.jsonio import PathLike, read_json, write_json
from selector.data.samples import IMAGE_TOKEN

BAD_KINDS = ("wrong_answer", "off_topic", "truncated", "repetitive")
DESCRIBE = "describe"  # the kind of a describe round (the others are QUESTION_KINDS)
DESCRIBE_QUESTIONS = ("Describe the image.", "Describe this image in detail.",
                      "What is shown in the picture?")
CONVERSATIONS_FILE = "conversations.json"
PLANTED_FILE = "planted.json"
#: the MiniGPT-4 conversation's separator and roles (``CONV_VISION``: "###", Human / Assistant)
ROUND_JOIN = "###Assistant: {answer}###Human: {question}"


# -- answers as sentences ------------------------------------------------------------------------

_ASKED = {"colour": re.compile(r"What colour (is|are) the (.+)\?"),
          "count": re.compile(r"How many (\w+) (are) there\?"),
          "shape": re.compile(r"What shape (is|are) the (.+)\?")}


def _noun(question: Question) -> Tuple[str, bool]:
    """(the noun phrase the question asks about, whether it is plural), from its wording (that
    of :func:`.questions.questions_of`; another wording is refused, not answered with nonsense)."""
    pattern = _ASKED.get(question.kind)
    found = pattern.fullmatch(question.text) if pattern is not None else None
    if found is None:
        raise ValueError(f"cannot word an answer to {question.kind} question {question.text!r}")
    if question.kind == "count":
        return found.group(1), True
    return found.group(2), found.group(1) == "are"


def answer_parts(question: Question, word: str) -> Tuple[str, str, str]:
    """(before, answer word as written, after) of the short sentence answering ``question`` with
    ``word``: "The circle is" + "red" + "."; the word may be a wrong one (a planted fault)."""
    noun, many = _noun(question)
    if question.kind == "colour":
        return f"The {noun} {'are' if many else 'is'}", word, "."
    if question.kind == "count":
        one = word == COUNT_WORDS[1]
        shape = noun[:-1] if one and noun.endswith("s") else noun
        return f"There {'is' if one else 'are'}", word, f" {shape}."
    if question.kind == "shape":
        return (f"The {noun} are", f"{word}s", ".") if many else (f"The {noun} is a", word, ".")
    raise ValueError(f"unknown question kind {question.kind!r}")


def answer_sentence(question: Question, word: Optional[str] = None) -> str:
    """The clean (or, with another ``word``, wrong) one-sentence answer to ``question``."""
    before, said, after = answer_parts(question, question.answer if word is None else word)
    return f"{before} {said}{after}"


def wrong_word(question: Question, rng: random.Random) -> str:
    """A word of the question's kind that is not its answer: another colour or shape, or a
    count one off (the near misses a model makes)."""
    if question.kind == "colour":
        return rng.choice(sorted(set(COLOURS) - {question.answer}))
    if question.kind == "shape":
        return rng.choice([shape for shape in SHAPES if shape != question.answer])
    index = COUNT_WORDS.index(question.answer)
    return COUNT_WORDS[rng.choice([i for i in (index - 1, index + 1)
                                   if 0 <= i < len(COUNT_WORDS)])]


# -- one conversation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Round:
    kind: str  # a question kind or DESCRIBE
    question: str
    answer: str  # the clean answer
    word: Optional[str] = None  # the one-word answer (None for a describe round)
    source: Optional[Question] = None


def draw_rounds(truth: Mapping[str, Any], rng: random.Random, rounds: Sequence[int] = (3, 4),
                describe_p: float = 0.4) -> List[Round]:
    """The clean rounds of one drawing. The draws are the same whatever is planted later."""
    questions = questions_of(truth, rng)
    caption = caption_of(truth, rng)
    n_rounds = rng.choice(tuple(rounds))
    describe = rng.random() < describe_p
    describe_prompt = rng.choice(DESCRIBE_QUESTIONS)
    describe_at = rng.random()
    order = rng.sample(questions, len(questions))
    chosen = [Round(q.kind, q.text, answer_sentence(q), q.answer, q)
              for q in order[:max(1, n_rounds - describe)]]
    if describe:
        chosen.insert(int(describe_at * (len(chosen) + 1)), Round(DESCRIBE, describe_prompt,
                                                                  caption))
    return chosen


def plant(kind: str, rounds: Sequence[Round], truth: Mapping[str, Any], rng: random.Random
          ) -> Tuple[List[str], List[int], Dict[str, Any]]:
    """(answers, bad round numbers counted from 1, what was done) for one bad kind."""
    answers = [r.answer for r in rounds]
    if kind == "off_topic":
        return [off_topic_caption(rng) for _ in rounds], list(range(1, len(rounds) + 1)), {}
    if kind not in BAD_KINDS:
        raise ValueError(f"unknown bad kind {kind!r} (one of {', '.join(BAD_KINDS)})")
    asked = [n for n, r in enumerate(rounds) if r.kind != DESCRIBE]
    hit = sorted(rng.sample(asked, rng.randint(1, len(asked))))
    fault: Dict[str, Any] = {"rounds": {}}
    for n in hit:
        question = rounds[n].source
        assert question is not None
        if kind == "wrong_answer":
            said = wrong_word(question, rng)
            answers[n] = answer_sentence(question, said)
            fault["rounds"][str(n + 1)] = {"from": question.answer, "to": said}
            continue
        stem = answer_parts(question, question.answer)[0]
        if kind == "truncated":
            answers[n] = stem
            fault["rounds"][str(n + 1)] = {"kept": stem}
        else:
            times = rng.randint(3, 6)
            answers[n] = " ".join([stem] + [stem[0].lower() + stem[1:]] * (times - 1))
            fault["rounds"][str(n + 1)] = {"times": times}
    described = [n for n, r in enumerate(rounds) if r.kind == DESCRIBE]
    if kind != "wrong_answer":
        for n in described:
            answers[n], detail = faulty_caption(kind, truth, rounds[n].answer, rng)
            fault["rounds"][str(n + 1)] = detail
            hit.append(n)
    return answers, sorted(m + 1 for m in hit), fault


def _record(sample_id: str, image: str, rounds: Sequence[Round], answers: Sequence[str]
            ) -> Dict[str, Any]:
    turns: List[Dict[str, str]] = []
    for n, (item, answer) in enumerate(zip(rounds, answers)):
        question = f"{IMAGE_TOKEN}\n{item.question}" if n == 0 else item.question
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"id": sample_id, "image": image, "conversations": turns}


# -- the pool ------------------------------------------------------------------------------------

@dataclass
class ToyConversations:
    """A generated conversation pool (``folder/conversations.json``, images under
    ``folder/image/``) and, per id, what was planted."""

    folder: Path
    ids: List[str]
    bad: Dict[str, bool]
    kinds: Dict[str, Optional[str]]  # the bad kind, None for a good conversation
    truth: Dict[str, Dict[str, Any]]  # what each image shows

    @property
    def json_path(self) -> Path:
        return self.folder / CONVERSATIONS_FILE

    @property
    def image_root(self) -> Path:
        return self.folder / "image"

    def bad_fraction(self, ids: Sequence[str]) -> float:
        return sum(self.bad[i] for i in ids) / len(ids) if ids else 0.0


def _save_image(truth: Mapping[str, Any], path: Path, image_size: int) -> None:
    with atomic_open(path, "wb") as handle:
        draw(truth, image_size).save(handle, format="JPEG", quality=92)


def _clear_stale(image_dir: Path, wanted: Sequence[str]) -> None:
    names = set(wanted)
    for stale in image_dir.glob("*.jpg"):  # a previous, larger set in the same folder
        if stale.name not in names:
            stale.unlink()


def make_toy_conversations(out_dir: PathLike, n: int = 300, bad_fraction: float = 0.25,
                           seed: int = 0, image_size: int = 64) -> ToyConversations:
    """Draw ``n`` images and write ``conversations.json`` (LLaVA format, ``"image": "<id>.jpg"``
    relative to ``out_dir/image/``), the images and ``planted.json``.

    Exactly ``round(bad_fraction * n)`` conversations are bad, the kinds dealt in turn (every kind
    present from 4 bad ones on) to randomly chosen conversations, as :func:`.world.make_toy_pool`.
    ``planted.json`` holds per id: bad, kind, truth, bad_rounds (counted from 1), the clean
    answers, the round kinds and the fault.
    """
    if n < 1:
        raise InputError(f"toy conversations: n must be at least 1 (got {n})")
    if not 0.0 <= bad_fraction <= 1.0:
        raise InputError(f"toy conversations: bad_fraction must be in [0, 1] (got {bad_fraction})")
    out_dir = Path(out_dir)
    image_dir = out_dir / "image"
    image_dir.mkdir(parents=True, exist_ok=True)
    ids = [f"{index + 1:06d}" for index in range(n)]
    planted_kind = deal_bad_kinds(
        ids, bad_fraction, BAD_KINDS,
        random.Random(f"igpt4-toy:conversation-planting:{seed}:{n}:{bad_fraction}"))
    _clear_stale(image_dir, [f"{i}.jpg" for i in ids])
    records, planted = [], {}
    for index, sample_id in enumerate(ids):
        rng = sample_rng("conversations", seed, index)
        truth = random_truth(rng)
        _save_image(truth, image_dir / f"{sample_id}.jpg", image_size)
        rounds = draw_rounds(truth, rng)
        clean = [r.answer for r in rounds]
        kind = planted_kind[sample_id]
        answers, bad_rounds, fault = (clean, [], None) if kind is None \
            else plant(kind, rounds, truth, rng)
        records.append(_record(sample_id, f"{sample_id}.jpg", rounds, answers))
        planted[sample_id] = {"bad": kind is not None, "kind": kind, "truth": truth,
                              "bad_rounds": bad_rounds, "clean_answers": clean,
                              "round_kinds": [r.kind for r in rounds],
                              "answer_words": [r.word for r in rounds], "fault": fault}
    write_json(out_dir / CONVERSATIONS_FILE, records, indent=1)
    write_json(out_dir / PLANTED_FILE, planted)
    return _pool_from(out_dir, ids, planted)


def _pool_from(folder: Path, ids: List[str], planted: Mapping[str, Mapping[str, Any]]
               ) -> ToyConversations:
    return ToyConversations(folder, ids, {i: bool(planted[i]["bad"]) for i in ids},
                            {i: planted[i]["kind"] for i in ids},
                            {i: planted[i]["truth"] for i in ids})


def load_toy_conversations(folder: PathLike) -> ToyConversations:
    """A pool written by :func:`make_toy_conversations`, read back from its ``planted.json``."""
    folder = Path(folder)
    path = folder / PLANTED_FILE
    if not path.is_file() or not (folder / CONVERSATIONS_FILE).is_file():
        raise InputError(f"{folder}: not a toy conversation pool (no {PLANTED_FILE} or "
                         f"{CONVERSATIONS_FILE}; make it with selector.app.toy.conversations."
                         "make_toy_conversations)")
    planted, _ = read_json(path)
    if not isinstance(planted, dict) or not all(
            isinstance(v, dict) and {"bad", "kind", "truth", "bad_rounds"} <= set(v)
            for v in planted.values()):
        raise InputError(f"{path}: expected {{id: {{bad, kind, truth, bad_rounds}}}}")
    return _pool_from(folder, list(planted), planted)


# -- the judge set -------------------------------------------------------------------------------

@dataclass(frozen=True)
class JudgeSet:
    """The held-out judge set, in the files ``igpt4 eval judge`` reads: ``--questions``
    (LLaVA-Bench-style JSONL: question_id, image, category, rounds), ``--references`` (JSONL:
    question_id, round, text) and ``--context`` (LLaVA-Bench ``context.jsonl``: image, caption;
    the faithful caption, for a judge that does not see the image). Images: ``images/<image>``."""

    folder: Path
    questions: Path
    references: Path
    context: Path
    images: Path
    n: int


def _write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    import json

    with atomic_open(path) as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def make_judge_set(out_dir: PathLike, n: int = 40, seed: int = 0, image_size: int = 64
                   ) -> JudgeSet:
    """``n`` held-out drawings, each a conversation of 2-3 rounds (question rounds and, now and
    then, a describe round) with reference answers in the pool's wording. Category ``"conv"``;
    question ids are integers, as LLaVA-Bench's."""
    if n < 1:
        raise InputError(f"toy judge set: n must be at least 1 (got {n})")
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    names = [f"{index + 1:04d}.jpg" for index in range(n)]
    _clear_stale(image_dir, names)
    questions, references, contexts = [], [], []
    for index, name in enumerate(names):
        rng = sample_rng("judge", seed, index)
        truth = random_truth(rng)
        _save_image(truth, image_dir / name, image_size)
        rounds = draw_rounds(truth, rng, rounds=(2, 3), describe_p=0.3)
        questions.append({"question_id": index + 1, "image": name, "category": "conv",
                          "rounds": [r.question for r in rounds]})
        references += [{"question_id": index + 1, "round": number, "text": r.answer}
                       for number, r in enumerate(rounds, 1)]
        contexts.append({"image": name, "caption": caption_of(truth, rng)})
    judge_set = JudgeSet(out_dir, out_dir / "questions.jsonl", out_dir / "references.jsonl",
                         out_dir / "context.jsonl", image_dir, n)
    _write_jsonl(judge_set.questions, questions)
    _write_jsonl(judge_set.references, references)
    _write_jsonl(judge_set.context, contexts)
    return judge_set


def conversation_question(questions: Sequence[str], answers: Sequence[str]) -> str:
    """The text handed to a MiniGPT-4-shaped tester for the last of ``questions``, the earlier
    rounds (``answers``, one per earlier question) inside it: ``q1###Assistant: a1###Human: q2``.
    The tester wraps it as ``arena_prompt``: ``system###Human: <Img><ImageHere></Img>
    q1###Assistant: a1###Human: q2###Assistant:``, which is MiniGPT-4's own multi-round
    conversation (``CONV_VISION``: roles Human / Assistant, separator ``###``, the image in the
    first human turn), so the tester needs no multi-round support of its own."""
    if len(answers) != len(questions) - 1:
        raise ValueError("one answer per earlier question")
    text = questions[0]
    for answer, question in zip(answers, questions[1:]):
        text += ROUND_JOIN.format(answer=answer, question=question)
    return text


def answer_judge_set(tester: Any, judge_set: JudgeSet, out_path: PathLike,
                     max_new_tokens: int = 64, batch_size: int = 1) -> Path:
    """Answer every round of every question of ``judge_set`` with ``tester`` (anything with
    ``generate(image, question, max_new_tokens)``, e.g.
    :class:`eval_arena.minigpt4_tester.MiniGPT4Tester`), each later round with the tester's own
    earlier answers as its context (:func:`conversation_question`). Writes ``out_path``
    atomically as JSONL (``question_id``, ``round``, ``text``, and the ``prompt`` handed to the
    tester), the answers file ``igpt4 eval judge --answers`` reads.

    ``batch_size`` > 1 answers that many conversations' same round at once with
    ``batch_generate`` (faster on a GPU; the Arena's MiniGPT-4 mode shows the padding, so a
    batched answer may differ from a single one)."""
    from eval_arena.judge_inputs import read_questions

    if batch_size < 1:
        raise InputError(f"answer_judge_set: batch_size must be at least 1 (got {batch_size})")
    parsed, _ = read_questions(judge_set.questions)
    answers: Dict[str, List[str]] = {q.id: [] for q in parsed}
    prompts: Dict[str, List[str]] = {q.id: [] for q in parsed}
    for number in range(1, max(len(q.questions) for q in parsed) + 1):
        due = [q for q in parsed if len(q.questions) >= number]
        for start in range(0, len(due), batch_size):
            chunk = due[start:start + batch_size]
            texts = [conversation_question(q.questions[:number], answers[q.id]) for q in chunk]
            images = [str(judge_set.images / (q.image or "")) for q in chunk]
            if batch_size == 1:
                replies = [tester.generate(images[0], texts[0], max_new_tokens=max_new_tokens)]
            else:
                replies = tester.batch_generate(images, texts, max_new_tokens=max_new_tokens)
            for question, text, reply in zip(chunk, texts, replies):
                answers[question.id].append(str(reply).strip())
                prompts[question.id].append(text)
    rows = [{"question_id": q.question_id, "round": number, "text": answer,
             "prompt": prompts[q.id][number - 1]}
            for q in parsed for number, answer in enumerate(answers[q.id], 1)]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_path, rows)
    return out_path
