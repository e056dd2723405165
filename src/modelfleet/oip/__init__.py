"""Open Inference Protocol v2: wire types and tensor codecs, free of any HTTP framework."""
