"""Access-log formats meshwatch knows by name: the data both parsers and the simulator share.

Istio's defaults are copied from Istio's mesh config (``EnvoyTextLogFormat`` /
``EnvoyJSONLogFormatIstio``); Envoy's default from its access-log documentation. The meshwatch
formats are Istio's plus the identity/TLS fields DESIGN.md recommends (infra/ configures them).
"""

from __future__ import annotations

ISTIO_DEFAULT_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "
    "%REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

ENVOY_DEFAULT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n'
)

# Istio's TEXT format with the peer identity / TLS fields appended (the order of DESIGN.md).
MESHWATCH_TEXT_FORMAT = ISTIO_DEFAULT_TEXT_FORMAT.rstrip("\n") + (
    " %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_LOCAL_URI_SAN% %UPSTREAM_PEER_URI_SAN% "
    "%DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_CERT_V_END% %ENVIRONMENT(POD_NAME)% "
    "%ENVIRONMENT(POD_NAMESPACE)%\n"
)

# Istio's JSON encoding: key -> Envoy command operator.
ISTIO_JSON_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

# What meshwatch recommends (and infra/ configures): Istio's JSON plus identity and TLS.
MESHWATCH_JSON_FORMAT: dict[str, str] = {
    **ISTIO_JSON_FORMAT,
    "downstream_peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
    "downstream_local_uri_san": "%DOWNSTREAM_LOCAL_URI_SAN%",
    "upstream_peer_uri_san": "%UPSTREAM_PEER_URI_SAN%",
    "downstream_tls_version": "%DOWNSTREAM_TLS_VERSION%",
    "downstream_peer_cert_v_end": "%DOWNSTREAM_PEER_CERT_V_END%",
    "pod_name": "%ENVIRONMENT(POD_NAME)%",
    "pod_namespace": "%ENVIRONMENT(POD_NAMESPACE)%",
}

# Text formats a parser tries, in order, when none is configured.
KNOWN_TEXT_FORMATS: dict[str, str] = {
    "meshwatch": MESHWATCH_TEXT_FORMAT,
    "istio": ISTIO_DEFAULT_TEXT_FORMAT,
    "envoy": ENVOY_DEFAULT_FORMAT,
}
