"""Answer scoring: the Multi-Modality-Arena metric, exactly, and the official VQA accuracy.

The paper's quality labels are Multi-Modality-Arena accuracies (``LVLM_evaluation/utils/tools.py``,
``VQAEval.evaluate``), so :func:`arena_score` reproduces that function bit for bit, quirks
included; ``tests/data/arena_vqaeval_golden.json`` holds the Arena's own outputs on several
hundred adversarial pairs and the tests compare every one. The quirks, all inherited from the
official VQA evaluation code the Arena copied its normalisation from:

* punctuation: each mark of :data:`PUNCTUATION` is deleted when it touches a space anywhere in the
  *original* text or when the text holds a comma between two digits anywhere ("1,000"); otherwise
  it becomes a space. ``'``, ``:``, ``.``, ``*``, ``#``, ``%``, ``&``, ``$`` are not in the list;
* periods: every ``.`` not followed by a digit is removed ("1.5" keeps its point), but at most 32
  of them, because the original passes ``re.UNICODE`` (= 32) where ``re.sub`` expects ``count``;
  its look-behind is mistyped as a look-ahead that can never fail;
* words: lower-cased and split on whitespace; number words zero..ten (and "none") become digits;
  "a", "an", "the" are dropped; apostrophe-less contractions ("dont") gain their apostrophe. The
  capitalised keys of the table ("Im", "Ive", "Id've") can never match after lower-casing;
* match: the prediction scores 1 when any normalised ground truth occurs in it as a whole word
  (``\\b`` + ``re.escape(gt)`` + ``\\b``, Unicode word boundaries), so a ground truth that
  normalises to "" matches any prediction with a word character in it, and one that starts or ends
  with a non-word character needs a word character on the far side;
* a ground truth is a string or a list of strings (any one of them may match).

:func:`vqa_score` is the official VQA accuracy (GT-Vision-Lab/VQA ``vqaEval.py``): whitespace
stripped; only when the annotators disagree are prediction and answers normalised (punctuation,
digits, articles; exact string equality otherwise); accuracy = mean over leaving each annotator
out of ``min(1, #other annotators who gave the prediction / 3)``. With a single ground truth the
official formula is always 0 (nobody is left to agree); we score that case as exact match of the
normalised strings instead (GQA, IconQA, ScienceQA, VSR, OCRVQA have one answer per question).
"""
from __future__ import annotations

import re
from typing import Callable, Dict, Iterable, List, Mapping, Sequence, Union

from selector.core.errors import InputError

GroundTruth = Union[str, Sequence[str]]

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
ARTICLES = frozenset(("a", "an", "the"))
NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}

# The official VQA table, written as "without->with" pairs. A few entries are oddities of the
# original (e.g. "somebody'd" -> "somebodyd", capitalised keys that never match) and are kept
# because they are part of the metric.
_CONTRACTION_PAIRS = """
aint:ain't arent:aren't cant:can't couldve:could've couldnt:couldn't couldn'tve:couldn't've
couldnt've:couldn't've didnt:didn't doesnt:doesn't dont:don't hadnt:hadn't hadnt've:hadn't've
hadn'tve:hadn't've hasnt:hasn't havent:haven't hed:he'd hed've:he'd've he'dve:he'd've hes:he's
howd:how'd howll:how'll hows:how's Id've:I'd've I'dve:I'd've Im:I'm Ive:I've isnt:isn't itd:it'd
itd've:it'd've it'dve:it'd've itll:it'll let's:let's maam:ma'am mightnt:mightn't
mightnt've:mightn't've mightn'tve:mightn't've mightve:might've mustnt:mustn't mustve:must've
neednt:needn't notve:not've oclock:o'clock oughtnt:oughtn't ow's'at:'ow's'at 'ows'at:'ow's'at
'ow'sat:'ow's'at shant:shan't shed've:she'd've she'dve:she'd've she's:she's shouldve:should've
shouldnt:shouldn't shouldnt've:shouldn't've shouldn'tve:shouldn't've somebody'd:somebodyd
somebodyd've:somebody'd've somebody'dve:somebody'd've somebodyll:somebody'll somebodys:somebody's
someoned:someone'd someoned've:someone'd've someone'dve:someone'd've someonell:someone'll
someones:someone's somethingd:something'd somethingd've:something'd've
something'dve:something'd've somethingll:something'll thats:that's thered:there'd
thered've:there'd've there'dve:there'd've therere:there're theres:there's theyd:they'd
theyd've:they'd've they'dve:they'd've theyll:they'll theyre:they're theyve:they've twas:'twas
wasnt:wasn't wed've:we'd've we'dve:we'd've weve:we've werent:weren't whatll:what'll
whatre:what're whats:what's whatve:what've whens:when's whered:where'd wheres:where's
whereve:where've whod:who'd whod've:who'd've who'dve:who'd've wholl:who'll whos:who's
whove:who've whyll:why'll whyre:why're whys:why's wont:won't wouldve:would've wouldnt:wouldn't
wouldnt've:wouldn't've wouldn'tve:wouldn't've yall:y'all yall'll:y'all'll y'allll:y'all'll
yall'd've:y'all'd've y'alld've:y'all'd've y'all'dve:y'all'd've youd:you'd youd've:you'd've
you'dve:you'd've youll:you'll youre:you're youve:you've
"""
CONTRACTIONS: Dict[str, str] = dict(pair.split(":", 1) for pair in _CONTRACTION_PAIRS.split())

_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The original pattern "(?!<=\d)(\.)(?!\d)": its first group is a look-ahead for "<=digit" at a
# position holding ".", which always succeeds, so this is the same pattern.
_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_LIMIT = int(re.UNICODE)  # the count the original passes by mistake (32)


def _flatten_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official VQA punctuation rule (see the module docstring for its quirks)."""
    glue_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if (glue_all or touches_space) else " ")
    return _PERIOD.sub("", out, count=_PERIOD_LIMIT)


def process_digit_article(text: str) -> str:
    """Lower-case, number words to digits, drop articles, restore contractions' apostrophes."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def normalize_answer(text: str) -> str:
    """The full normalisation the Arena applies to predictions and ground truths alike."""
    return process_digit_article(process_punctuation(_flatten_whitespace(text)))


def _as_list(gt_answers: GroundTruth) -> List[str]:
    if isinstance(gt_answers, str):
        return [gt_answers]
    if isinstance(gt_answers, (list, tuple)) and all(isinstance(a, str) for a in gt_answers):
        return list(gt_answers)
    raise TypeError(f"ground truth must be a string or a list of strings, got {gt_answers!r}")


def contains_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` between word boundaries (the Arena's ``has_word``)."""
    return re.search(r"\b" + re.escape(word) + r"\b", text) is not None


def arena_score(prediction: str, gt_answers: GroundTruth) -> int:
    """Multi-Modality-Arena ``VQAEval.evaluate``: 1 if a normalised ground truth is a whole word
    (or phrase) of the normalised prediction, else 0."""
    answer = normalize_answer(prediction)
    return int(any(contains_word(answer, normalize_answer(gt)) for gt in _as_list(gt_answers)))


def vqa_score(prediction: str, gt_answers: GroundTruth) -> float:
    """Official VQA accuracy of one prediction (leave-one-annotator-out average of
    ``min(1, matches / 3)``); a single ground truth scores as normalised exact match."""
    answers = [_flatten_whitespace(a) for a in _as_list(gt_answers)]
    if not answers:
        return 0.0
    prediction = _flatten_whitespace(prediction)
    if len(answers) == 1:
        return float(normalize_answer(prediction) == normalize_answer(answers[0]))
    if len(set(answers)) > 1:
        answers = [process_digit_article(process_punctuation(a)) for a in answers]
        prediction = process_digit_article(process_punctuation(prediction))
    matches = sum(1 for a in answers if a == prediction)
    # leaving out annotator i removes one match exactly when annotator i gave the prediction
    per_left_out = [min(1.0, (matches - (a == prediction)) / 3) for a in answers]
    return sum(per_left_out) / len(per_left_out)


METRICS: Dict[str, Callable[[str, GroundTruth], float]] = {"arena": arena_score, "vqa": vqa_score}


def get_metric(name: str) -> Callable[[str, GroundTruth], float]:
    try:
        return METRICS[name]
    except KeyError:
        raise InputError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}") from None


def accuracy(predictions: Iterable[Mapping[str, object]], metric: str = "arena") -> float:
    """Dataset accuracy over Arena answer records (``answer``, ``gt_answers``): the mean score
    (for the Arena metric, correct / total as ``evaluate_VQA`` computes it)."""
    score = get_metric(metric)
    total, n = 0.0, 0
    for record in predictions:
        total += score(record["answer"], record["gt_answers"])  # type: ignore[arg-type]
        n += 1
    if n == 0:
        raise ValueError("accuracy of an empty prediction list")
    return float(total) / n
