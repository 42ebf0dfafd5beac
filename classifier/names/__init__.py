"""Names in clear and what they mean: which server a flow talks to, and its service.

* parsers of what a flow's first packets carry in clear: the TLS ClientHello (:mod:`.tls`),
  QUIC client Initials (:mod:`.quic`), Google QUIC CHLOs (:mod:`.gquic`), DNS answers
  (:mod:`.dns`);
* :mod:`.extract`: a flow's :class:`~classifier.names.extract.NameExtractor` (SNI, ALPN,
  QUIC version) and its compiled twin for the common case, :mod:`.extract_fast`;
* :mod:`.cache`: the DNS :class:`~classifier.names.cache.NameCache` (address -> name);
* :mod:`.plugin`: the flow plugin that feeds both and gives a flow its name columns, and
  :mod:`.plugin_fast`, its twin in the fast engine (over packet columns);
* :mod:`.services`: host name -> service -> category, from the rules in ``services.toml``.

Nothing here imports the feature groups or the models; both use these modules.
"""
