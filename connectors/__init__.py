"""The edges of the exchange: the source-system producer and the sample-data generator."""
