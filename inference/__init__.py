"""The capture engine: video -> hand detection -> landmarks -> tracks -> MANO fit -> Take
(two-hand de-occlusion and the motion prior are planned: issues 12 and 11). Installed as
``handmocap.inference``; start reading at :func:`.capture.capture`.

The stages: docs/architecture.md, "Data flow". Each model stage is preprocess -> run ->
postprocess with pure-numpy pre/post parts.
"""
