"""The capture engine: video -> hand detection -> landmarks (two overlapping hands'
crops cleaned of each other, :mod:`.deocclusion`) -> tracks -> MANO fit -> motion prior
-> Take. Installed as ``handmocap.inference``; start reading at :func:`.capture.capture`.

The stages: docs/architecture.md, "Data flow". Each model stage is preprocess -> run ->
postprocess with pure-numpy pre/post parts.
"""
