"""Foundation shared by every layer: atomic file IO and the cache root (``io``), the device and seeding
(``device``), the torchvision import workaround (``compat``), the registry shape every plug-in uses
(``registry``) and what a conv / linear layer is (``layers``). Imports nothing else of shrinkviz."""
