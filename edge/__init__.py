"""The edge agent: ``splitwire edge`` paces a camera, runs the head, streams the activations to
the tail and emits one output per frame, whatever the network does."""
