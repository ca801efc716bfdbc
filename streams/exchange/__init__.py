"""The exchange (共享交换): requests and answers over Kafka, and subscriptions.

- :mod:`streams.exchange.messages`: ExchangeRequest, ExchangeAnswer, Subscription and
  SubscriptionDelivery, Avro single-object encoded (``schemas/avro``);
- :mod:`streams.exchange.core`: the decisions, without Kafka (policy, view, masks, retries,
  malformed requests, subscriptions matched against pool changes);
- :mod:`streams.exchange.runtime`: the transactional producer, the access log's writer and
  the decisions store on Kafka;
- :mod:`streams.exchange.agent`: the reader, the lease and the Faust agent of a worker.

Each department writes requests to ``<prefix>.request.<dept>`` and reads answers from
``<prefix>.reply.<dept>``; the requester is the topic, never a field of the request.
"""
