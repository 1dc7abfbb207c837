"""The ground every stage stands on, and nothing of the science: errors and the one-line error
wrapper, strict JSON/text decoding, the one atomic writer, the input/output overlap check,
weights-only loading, secret redaction, the one fingerprint hasher, settings (layers, schema,
validation), user paths, the torchvision shim, rank sharing, provenance (log, versions), the
OpenAI-compatible chat client and the result cache that paid replies are kept in.

May import: only itself (and third-party libraries, lazily when heavy). Everything else imports
it, so a change here is a change everywhere: keep it small and free of sample or model types.
"""
