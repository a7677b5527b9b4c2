"""The capture engine: video -> hand detection -> landmarks -> two-hand de-occlusion ->
MANO fit -> motion prior -> Take. Installed as ``handmocap.inference``.

See ARCHITECTURE section 3 for the stages; each model stage is preprocess -> run ->
postprocess with pure-numpy pre/post parts.
"""
