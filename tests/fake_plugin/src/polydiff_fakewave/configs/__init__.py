"""Bundled configs of the fake plugin (``polydiff fakewave fit -c tiny``)."""
