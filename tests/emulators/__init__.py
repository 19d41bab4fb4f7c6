"""Emulators of provider APIs that cannot run here, written from the providers' public API
references (see each package's README). They keep state, go through the provider's states,
return its error shapes and run the image on the real Docker engine with that provider's
container contract; the real SDKs reach them through their documented endpoint overrides."""
