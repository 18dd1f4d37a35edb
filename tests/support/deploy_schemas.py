"""JSON schemas for the custom resources in ``deploy/``, written by hand from the CRDs' OpenAPI
(prometheus-operator v0.78 ``monitoring.coreos.com/v1``; Istio 1.24 ``networking.istio.io/v1``
and ``security.istio.io/v1``). They cover the fields aiobs's manifests may use, with the
CRDs' types and enums, and reject any other field (``additionalProperties: false``), so a
typo or a field in the wrong place fails offline. No remote ``$ref``: nothing is fetched."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _list(items: Schema, min_items: int = 0) -> Schema:
    return {"type": "array", "items": items, "minItems": min_items}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
STR_MAP: Schema = {"type": "object", "additionalProperties": STR}
DURATION: Schema = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"}
INT_OR_STR: Schema = {"anyOf": [INT, STR]}
STRING_MATCH: Schema = {
    "type": "object",
    "properties": {"exact": STR, "prefix": STR, "regex": STR},
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}
METADATA: Schema = {
    "type": "object",
    "properties": {
        "name": STR,
        "namespace": STR,
        "labels": STR_MAP,
        "annotations": STR_MAP,
    },
    "required": ["name"],
    "additionalProperties": False,
}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    return _obj(
        ("apiVersion", "kind", "metadata", "spec"),
        apiVersion={"const": api_version},
        kind={"const": kind},
        metadata=METADATA,
        spec=spec,
    )


LABEL_SELECTOR = _obj(
    matchLabels=STR_MAP,
    matchExpressions=_list(
        _obj(
            ("key", "operator"),
            key=STR,
            operator={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
            values=_list(STR),
        )
    ),
)
RELABEL = _obj(
    sourceLabels=_list({"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}),
    separator=STR,
    targetLabel=STR,
    regex=STR,
    modulus=INT,
    replacement=STR,
    action={
        "enum": [
            "replace",
            "Replace",
            "keep",
            "Keep",
            "drop",
            "Drop",
            "hashmod",
            "HashMod",
            "labelmap",
            "LabelMap",
            "labeldrop",
            "LabelDrop",
            "labelkeep",
            "LabelKeep",
            "lowercase",
            "Lowercase",
            "uppercase",
            "Uppercase",
            "keepequal",
            "KeepEqual",
            "dropequal",
            "DropEqual",
        ]
    },
)
PROM_DURATION: Schema = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
    r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    _obj(
        ("selector", "endpoints"),
        jobLabel=STR,
        selector=LABEL_SELECTOR,
        namespaceSelector=_obj(any=BOOL, matchNames=_list(STR)),
        endpoints=_list(
            _obj(
                port=STR,
                targetPort=INT_OR_STR,
                path=STR,
                scheme={"enum": ["http", "https"]},
                interval=PROM_DURATION,
                scrapeTimeout=PROM_DURATION,
                honorLabels=BOOL,
                relabelings=_list(RELABEL),
                tlsConfig=_obj(
                    caFile=STR,
                    certFile=STR,
                    keyFile=STR,
                    insecureSkipVerify=BOOL,
                    serverName=STR,
                ),
                metricRelabelings=_list(RELABEL),
            ),
            min_items=1,
        ),
    ),
)

RULE = {
    "type": "object",
    "properties": {
        "record": STR,
        "alert": STR,
        "expr": INT_OR_STR,
        "for": PROM_DURATION,
        "keep_firing_for": PROM_DURATION,
        "labels": STR_MAP,
        "annotations": STR_MAP,
    },
    "required": ["expr"],
    "additionalProperties": False,
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}
PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    _obj(
        groups=_list(
            _obj(
                ("name",),
                name={"type": "string", "minLength": 1},
                interval=PROM_DURATION,
                limit=INT,
                query_offset=PROM_DURATION,
                partial_response_strategy=STR,
                labels=STR_MAP,
                rules=_list(RULE),
            )
        )
    ),
)

PORT_SELECTOR = _obj(("number",), number={"type": "integer", "minimum": 1, "maximum": 65535})
DESTINATION = _obj(("host",), host=STR, subset=STR, port=PORT_SELECTOR)
HTTP_MATCH = _obj(
    name=STR,
    uri=STRING_MATCH,
    method=STRING_MATCH,
    authority=STRING_MATCH,
    headers={"type": "object", "additionalProperties": STRING_MATCH},
    queryParams={"type": "object", "additionalProperties": STRING_MATCH},
    withoutHeaders={"type": "object", "additionalProperties": STRING_MATCH},
    port=INT,
    gateways=_list(STR),
)
HTTP_ROUTE = _obj(
    name=STR,
    match=_list(HTTP_MATCH),
    route=_list(
        _obj(
            ("destination",),
            destination=DESTINATION,
            weight={"type": "integer", "minimum": 0, "maximum": 100},
        )
    ),
    timeout=DURATION,
    retries=_obj(attempts=INT, perTryTimeout=DURATION, retryOn=STR, retryRemoteLocalities=BOOL),
    mirror=DESTINATION,
    mirrorPercentage=_obj(("value",), value={"type": "number", "minimum": 0, "maximum": 100}),
    mirrors=_list(
        _obj(("destination",), destination=DESTINATION, percentage=_obj(("value",), value=NUM))
    ),
    headers=_obj(
        request=_obj(set=STR_MAP, add=STR_MAP, remove=_list(STR)),
        response=_obj(set=STR_MAP, add=STR_MAP, remove=_list(STR)),
    ),
)
VIRTUAL_SERVICE = _resource(
    "networking.istio.io/v1",
    "VirtualService",
    _obj(
        ("hosts",),
        hosts=_list(STR, 1),
        gateways=_list(STR),
        exportTo=_list(STR),
        http=_list(HTTP_ROUTE),
    ),
)

GATEWAY = _resource(
    "networking.istio.io/v1",
    "Gateway",
    _obj(
        ("servers",),
        selector=STR_MAP,
        servers=_list(
            _obj(
                ("port", "hosts"),
                port=_obj(
                    ("number", "protocol", "name"),
                    number=INT,
                    name=STR,
                    protocol={"enum": ["HTTP", "HTTPS", "GRPC", "HTTP2", "MONGO", "TCP", "TLS"]},
                ),
                hosts=_list(STR, 1),
                name=STR,
                tls=_obj(
                    mode={
                        "enum": [
                            "PASSTHROUGH",
                            "SIMPLE",
                            "MUTUAL",
                            "AUTO_PASSTHROUGH",
                            "ISTIO_MUTUAL",
                            "OPTIONAL_MUTUAL",
                        ]
                    },
                    credentialName=STR,
                    httpsRedirect=BOOL,
                    minProtocolVersion=STR,
                ),
            ),
            min_items=1,
        ),
    ),
)

TRAFFIC_POLICY = _obj(
    tls=_obj(mode={"enum": ["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]}, sni=STR),
    connectionPool=_obj(
        tcp=_obj(
            maxConnections=INT,
            connectTimeout=DURATION,
            maxConnectionDuration=DURATION,
            idleTimeout=DURATION,
        ),
        http=_obj(
            http1MaxPendingRequests=INT,
            http2MaxRequests=INT,
            maxRequestsPerConnection=INT,
            maxRetries=INT,
            idleTimeout=DURATION,
            h2UpgradePolicy={"enum": ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"]},
            maxConcurrentStreams=INT,
        ),
    ),
    outlierDetection=_obj(
        consecutive5xxErrors=INT,
        consecutiveGatewayErrors=INT,
        consecutiveLocalOriginFailures=INT,
        splitExternalLocalOriginErrors=BOOL,
        interval=DURATION,
        baseEjectionTime=DURATION,
        maxEjectionPercent={"type": "integer", "minimum": 0, "maximum": 100},
        minHealthPercent={"type": "integer", "minimum": 0, "maximum": 100},
    ),
    loadBalancer=_obj(
        simple={
            "enum": [
                "UNSPECIFIED",
                "RANDOM",
                "PASSTHROUGH",
                "ROUND_ROBIN",
                "LEAST_REQUEST",
                "LEAST_CONN",
            ]
        },
    ),
)
DESTINATION_RULE = _resource(
    "networking.istio.io/v1",
    "DestinationRule",
    _obj(
        ("host",),
        host=STR,
        trafficPolicy=TRAFFIC_POLICY,
        subsets=_list(_obj(("name",), name=STR, labels=STR_MAP, trafficPolicy=TRAFFIC_POLICY)),
        exportTo=_list(STR),
    ),
)

PEER_AUTHENTICATION = _resource(
    "security.istio.io/v1",
    "PeerAuthentication",
    _obj(
        selector=_obj(matchLabels=STR_MAP),
        mtls=_obj(mode={"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}),
        portLevelMtls={
            "type": "object",
            "additionalProperties": _obj(
                mode={"enum": ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]}
            ),
        },
    ),
)

AUTHORIZATION_POLICY = _resource(
    "security.istio.io/v1",
    "AuthorizationPolicy",
    _obj(
        selector=_obj(matchLabels=STR_MAP),
        action={"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        rules=_list(
            _obj(
                **{
                    "from": _list(
                        _obj(
                            source=_obj(
                                principals=_list(STR),
                                notPrincipals=_list(STR),
                                namespaces=_list(STR),
                                notNamespaces=_list(STR),
                                ipBlocks=_list(STR),
                                requestPrincipals=_list(STR),
                            )
                        )
                    )
                },
                to=_list(
                    _obj(
                        operation=_obj(
                            methods=_list(STR),
                            notMethods=_list(STR),
                            paths=_list(STR),
                            notPaths=_list(STR),
                            ports=_list(STR),
                            hosts=_list(STR),
                        )
                    )
                ),
                when=_list(_obj(("key",), key=STR, values=_list(STR), notValues=_list(STR))),
            )
        ),
    ),
)

SCHEMAS: dict[tuple[str, str], Schema] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE,
    ("networking.istio.io/v1", "Gateway"): GATEWAY,
    ("networking.istio.io/v1", "VirtualService"): VIRTUAL_SERVICE,
    ("networking.istio.io/v1", "DestinationRule"): DESTINATION_RULE,
    ("security.istio.io/v1", "PeerAuthentication"): PEER_AUTHENTICATION,
    ("security.istio.io/v1", "AuthorizationPolicy"): AUTHORIZATION_POLICY,
}
"""(apiVersion, kind) to the schema its documents must satisfy."""
