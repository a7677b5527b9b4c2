"""Network definitions, weight conversion, and the open hand assets (the WebXR hand, and the
hand model in MANO's layout built from it). Installed as ``handmocap.models``."""
