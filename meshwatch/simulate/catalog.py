"""The applications the simulated mesh runs: Istio's Bookinfo, Google's Online Boutique, a few
platform services, crown jewels and a pool of extra services to grow the mesh.

Kept as plain data so the shape of the mesh (ports, protocols, who calls whom with which
operation) reads like the real manifests it imitates, separate from the code that builds pods.
Ports, paths and gRPC methods are those of the upstream projects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Protocol = Literal["http", "grpc", "tcp"]


@dataclass(frozen=True, slots=True)
class Child:
    """A downstream call an operation makes while serving a request."""

    service: str
    op: str
    prob: float = 1.0
    count: tuple[int, int] = (1, 1)
    # Only these versions of the serving workload make the call (reviews-v1 never calls ratings).
    versions: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One endpoint (HTTP route or gRPC method) of a service and what serving it costs."""

    name: str
    method: str  # HTTP method; "POST" for gRPC; "" for TCP
    path: str  # path template ({id} is filled per call); the gRPC :path for gRPC
    latency_ms: float = 3.0  # median own processing time
    resp_bytes: int = 500  # median response size
    req_bytes: int = 0  # median request body size
    status: int = 200  # normal HTTP status (302 for form posts)
    error_rate: float = 0.002  # application 500s (gRPC: INTERNAL)
    not_found_rate: float = 0.0  # 404s (gRPC: NOT_FOUND)
    children: tuple[Child, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A Kubernetes Service with its Deployment(s), as the upstream manifests define them."""

    name: str
    namespace: str
    protocol: Protocol
    port: int
    target_port: int
    language: str  # decides user agents and instrumentation scope names
    ops: tuple[OpSpec, ...] = ()
    versions: tuple[str, ...] = ("v1",)
    versioned_workloads: bool = False  # Bookinfo names deployments <svc>-<version>
    replicas: int = 2
    service_account: str | None = None  # default: the service name
    instrumented: bool = True  # has an OpenTelemetry SDK (third-party servers do not)
    old_semconv: bool = False  # an older SDK emitting http.method / net.peer.* names
    sensitive: bool = False  # crown jewel
    authz: bool = False  # an AuthorizationPolicy allows only the callers of the catalog
    subsets: bool = False  # a VirtualService routes by version subset
    http_version: str = "HTTP/1.1"
    app: str = "platform"
    description: str = ""
    # Long-lived TCP clients of this service (databases, caches): pooled connections.
    pooled_clients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """A request arriving through the ingress gateway: which host, service and operation."""

    host: str
    service: str
    op: str
    weight: float


@dataclass(frozen=True, slots=True)
class Background:
    """A periodic in-mesh job (a poller, a report) that starts its own call trees."""

    caller: str
    service: str
    op: str
    interval_s: float


def _grpc(pkg_service: str, method: str, **kw: Any) -> OpSpec:
    return OpSpec(name=method, method="POST", path=f"/{pkg_service}/{method}", **kw)


_HB = "hipstershop"
PRODUCT_IDS = ("OLJCESPC7Z", "66VCHSJNUP", "1YMWWN1N4O", "L9ECAV7KIM", "2ZYFJ3GM2N",
               "0PUK6V6EV0", "LS4PSXUNUM", "9SIQT8TOJO", "6E92ZMYYFZ")

INGRESS = ServiceSpec(
    name="istio-ingressgateway", namespace="istio-system", protocol="http", port=80,
    target_port=8080, language="envoy", replicas=2,
    service_account="istio-ingressgateway-service-account", instrumented=False,
    app="istio", description="Istio ingress gateway (TLS terminated at the cloud load balancer)",
)

# Core services in the order they join the mesh: every service's callers come before it, so a
# mesh of the first N services is always connected. The first 10 are what every scenario needs.
CORE: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        name="productpage", namespace="bookinfo", protocol="http", port=9080, target_port=9080,
        language="python", versioned_workloads=True, replicas=2,
        service_account="bookinfo-productpage", authz=True, app="bookinfo",
        description="Bookinfo product page",
        ops=(
            OpSpec("productpage", "GET", "/productpage", latency_ms=8, resp_bytes=5200,
                   children=(Child("details", "get"), Child("reviews", "get"),
                             Child("auth-service", "introspect", prob=0.3))),
            OpSpec("login", "POST", "/login", latency_ms=4, resp_bytes=300, req_bytes=60,
                   status=302),
            OpSpec("api_products", "GET", "/api/v1/products", latency_ms=2, resp_bytes=395),
        ),
    ),
    ServiceSpec(
        name="details", namespace="bookinfo", protocol="http", port=9080, target_port=9080,
        language="ruby", versioned_workloads=True, replicas=1,
        service_account="bookinfo-details", authz=True, app="bookinfo",
        description="Bookinfo book details",
        ops=(OpSpec("get", "GET", "/details/0", latency_ms=1.5, resp_bytes=178),),
    ),
    ServiceSpec(
        name="reviews", namespace="bookinfo", protocol="http", port=9080, target_port=9080,
        language="java", versions=("v1", "v2", "v3"), versioned_workloads=True, replicas=2,
        service_account="bookinfo-reviews", authz=True, subsets=True, old_semconv=True,
        app="bookinfo", description="Bookinfo reviews (three versions behind subsets)",
        ops=(OpSpec("get", "GET", "/reviews/0", latency_ms=6, resp_bytes=358,
                    children=(Child("ratings", "get", versions=("v2", "v3", "v4")),)),),
    ),
    ServiceSpec(
        name="ratings", namespace="bookinfo", protocol="http", port=9080, target_port=9080,
        language="node", versioned_workloads=True, replicas=2,
        service_account="bookinfo-ratings", authz=True, old_semconv=True, app="bookinfo",
        description="Bookinfo star ratings",
        ops=(OpSpec("get", "GET", "/ratings/0", latency_ms=1.2, resp_bytes=48),),
    ),
    ServiceSpec(
        name="frontend", namespace="boutique", protocol="http", port=80, target_port=8080,
        language="go", replicas=3, authz=True, app="online-boutique",
        description="Online Boutique web frontend",
        ops=(
            OpSpec("home", "GET", "/", latency_ms=4, resp_bytes=11500, children=(
                Child("currencyservice", "GetSupportedCurrencies"),
                Child("productcatalogservice", "ListProducts"),
                Child("cartservice", "GetCart"),
                Child("currencyservice", "Convert", count=(3, 9)),
                Child("adservice", "GetAds"),
                Child("auth-service", "introspect", prob=0.3))),
            OpSpec("product", "GET", "/product/{product}", latency_ms=3, resp_bytes=8900,
                   not_found_rate=0.01, children=(
                       Child("productcatalogservice", "GetProduct"),
                       Child("currencyservice", "GetSupportedCurrencies"),
                       Child("cartservice", "GetCart"),
                       Child("currencyservice", "Convert"),
                       Child("recommendationservice", "ListRecommendations"),
                       Child("adservice", "GetAds"))),
            OpSpec("view_cart", "GET", "/cart", latency_ms=3, resp_bytes=7600, children=(
                Child("currencyservice", "GetSupportedCurrencies"),
                Child("cartservice", "GetCart"),
                Child("recommendationservice", "ListRecommendations"),
                Child("shippingservice", "GetQuote"),
                Child("currencyservice", "Convert", count=(1, 3)),
                Child("productcatalogservice", "GetProduct", count=(1, 3)))),
            OpSpec("add_to_cart", "POST", "/cart", latency_ms=2, resp_bytes=0, req_bytes=40,
                   status=302, children=(
                       Child("productcatalogservice", "GetProduct"),
                       Child("cartservice", "AddItem"))),
            OpSpec("checkout", "POST", "/cart/checkout", latency_ms=5, resp_bytes=6900,
                   req_bytes=310, children=(
                       Child("checkoutservice", "PlaceOrder"),
                       Child("recommendationservice", "ListRecommendations"),
                       Child("currencyservice", "GetSupportedCurrencies"))),
            OpSpec("set_currency", "POST", "/setCurrency", latency_ms=1, resp_bytes=0,
                   req_bytes=22, status=302),
        ),
    ),
    ServiceSpec(
        name="checkoutservice", namespace="boutique", protocol="grpc", port=5050,
        target_port=5050, language="go", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique checkout orchestration",
        ops=(_grpc(f"{_HB}.CheckoutService", "PlaceOrder", latency_ms=6, resp_bytes=260,
                   req_bytes=190, children=(
                       Child("cartservice", "GetCart"),
                       Child("productcatalogservice", "GetProduct", count=(1, 4)),
                       Child("currencyservice", "Convert", count=(1, 4)),
                       Child("shippingservice", "GetQuote"),
                       Child("paymentservice", "Charge"),
                       Child("shippingservice", "ShipOrder"),
                       Child("cartservice", "EmptyCart"),
                       Child("emailservice", "SendOrderConfirmation"),
                       Child("legacy-billing", "create_invoice"))),),
    ),
    ServiceSpec(
        name="legacy-billing", namespace="legacy", protocol="http", port=8080, target_port=8080,
        language="java8", replicas=2, service_account="default", app="legacy",
        old_semconv=True, description="Legacy invoicing (PERMISSIVE namespace, no authz)",
        ops=(
            OpSpec("create_invoice", "POST", "/api/v1/invoices", latency_ms=25, resp_bytes=410,
                   req_bytes=880, status=201),
            OpSpec("pending", "GET", "/api/v1/invoices/pending", latency_ms=12,
                   resp_bytes=2300),
            OpSpec("health", "GET", "/healthz", latency_ms=0.4, resp_bytes=2),
        ),
    ),
    ServiceSpec(
        name="paymentservice", namespace="boutique", protocol="grpc", port=50051,
        target_port=50051, language="node", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique card payments",
        ops=(_grpc(f"{_HB}.PaymentService", "Charge", latency_ms=9, resp_bytes=52,
                   req_bytes=120, children=(Child("vault", "read", prob=0.05),)),),
    ),
    ServiceSpec(
        name="payments-db", namespace="payments", protocol="tcp", port=5432, target_port=5432,
        language="none", replicas=1, service_account="payments-db", instrumented=False,
        sensitive=True, authz=True, app="payments",
        description="PostgreSQL with card tokens (crown jewel)",
        pooled_clients=("paymentservice",),
    ),
    ServiceSpec(
        name="vault", namespace="security", protocol="http", port=8200, target_port=8200,
        language="none", replicas=1, service_account="vault", instrumented=False,
        sensitive=True, authz=True, app="vault",
        description="HashiCorp Vault holding payment and database secrets (crown jewel)",
        ops=(
            OpSpec("read", "GET", "/v1/secret/data/payments/stripe", latency_ms=2,
                   resp_bytes=620),
            OpSpec("login", "POST", "/v1/auth/kubernetes/login", latency_ms=6, resp_bytes=780,
                   req_bytes=1100),
        ),
    ),
    ServiceSpec(
        name="cartservice", namespace="boutique", protocol="grpc", port=7070, target_port=7070,
        language="dotnet", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique cart (Redis backed)",
        ops=(
            _grpc(f"{_HB}.CartService", "GetCart", latency_ms=1.5, resp_bytes=90, req_bytes=45),
            _grpc(f"{_HB}.CartService", "AddItem", latency_ms=2, resp_bytes=5, req_bytes=60),
            _grpc(f"{_HB}.CartService", "EmptyCart", latency_ms=1.5, resp_bytes=5,
                  req_bytes=45),
        ),
    ),
    ServiceSpec(
        name="redis-cart", namespace="boutique", protocol="tcp", port=6379, target_port=6379,
        language="none", replicas=1, instrumented=False, authz=True, app="online-boutique",
        description="Redis for carts", pooled_clients=("cartservice",),
    ),
    ServiceSpec(
        name="productcatalogservice", namespace="boutique", protocol="grpc", port=3550,
        target_port=3550, language="go", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique product catalog",
        ops=(
            _grpc(f"{_HB}.ProductCatalogService", "ListProducts", latency_ms=1.2,
                  resp_bytes=2900),
            _grpc(f"{_HB}.ProductCatalogService", "GetProduct", latency_ms=0.8, resp_bytes=330,
                  req_bytes=17, not_found_rate=0.002),
            _grpc(f"{_HB}.ProductCatalogService", "SearchProducts", latency_ms=1.5,
                  resp_bytes=900, req_bytes=20),
        ),
    ),
    ServiceSpec(
        name="currencyservice", namespace="boutique", protocol="grpc", port=7000,
        target_port=7000, language="node", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique currency conversion",
        ops=(
            _grpc(f"{_HB}.CurrencyService", "GetSupportedCurrencies", latency_ms=0.6,
                  resp_bytes=140),
            _grpc(f"{_HB}.CurrencyService", "Convert", latency_ms=0.7, resp_bytes=35,
                  req_bytes=30),
        ),
    ),
    ServiceSpec(
        name="shippingservice", namespace="boutique", protocol="grpc", port=50051,
        target_port=50051, language="go", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique shipping quotes and orders",
        ops=(
            _grpc(f"{_HB}.ShippingService", "GetQuote", latency_ms=1, resp_bytes=30,
                  req_bytes=120),
            _grpc(f"{_HB}.ShippingService", "ShipOrder", latency_ms=1.5, resp_bytes=45,
                  req_bytes=120),
        ),
    ),
    ServiceSpec(
        name="emailservice", namespace="boutique", protocol="grpc", port=5000, target_port=8080,
        language="python", replicas=1, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique order confirmation e-mails",
        ops=(_grpc(f"{_HB}.EmailService", "SendOrderConfirmation", latency_ms=12,
                   resp_bytes=5, req_bytes=420),),
    ),
    ServiceSpec(
        name="recommendationservice", namespace="boutique", protocol="grpc", port=8080,
        target_port=8080, language="python", replicas=2, authz=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique recommendations",
        ops=(_grpc(f"{_HB}.RecommendationService", "ListRecommendations", latency_ms=3,
                   resp_bytes=70, req_bytes=60,
                   children=(Child("productcatalogservice", "ListProducts"),)),),
    ),
    ServiceSpec(
        name="adservice", namespace="boutique", protocol="grpc", port=9555, target_port=9555,
        language="java", replicas=1, authz=True, old_semconv=True, http_version="HTTP/2",
        app="online-boutique", description="Online Boutique contextual ads",
        ops=(_grpc(f"{_HB}.AdService", "GetAds", latency_ms=2, resp_bytes=180, req_bytes=20),),
    ),
    ServiceSpec(
        name="auth-service", namespace="platform", protocol="http", port=8080,
        target_port=8080, language="go", replicas=2, app="platform",
        description="OAuth2 token introspection",
        ops=(OpSpec("introspect", "POST", "/oauth2/introspect", latency_ms=1.5,
                    resp_bytes=210, req_bytes=980),),
    ),
    ServiceSpec(
        name="legacy-db", namespace="legacy", protocol="tcp", port=3306, target_port=3306,
        language="none", replicas=1, service_account="default", instrumented=False,
        app="legacy", description="MySQL behind the legacy billing system",
        pooled_clients=("legacy-billing",),
    ),
)

# A service deployed mid-run by the `service_rollout` look-alike (not part of --services).
ROLLOUT_SERVICE = ServiceSpec(
    name="loyaltyservice", namespace="boutique", protocol="grpc", port=8080, target_port=8080,
    language="go", replicas=2, authz=True, http_version="HTTP/2", app="online-boutique",
    description="Loyalty points (rolled out during the run)",
    ops=(_grpc(f"{_HB}.LoyaltyService", "GetBalance", latency_ms=1.5, resp_bytes=24,
               req_bytes=40),),
)
# The frontend shows the shopper's points on the home page from the rollout on.
ROLLOUT_CALLER = Child("loyaltyservice", "GetBalance", prob=0.5)
ROLLOUT_CALLER_SERVICE, ROLLOUT_CALLER_OP = "frontend", "home"

# Extra services that grow the mesh past the core, each with the callers that use it:
# (name, namespace, protocol, port, language, op method, op path, [(caller, caller op, prob)],
#  instrumented). A tcp service lists its pooled clients as callers (op and prob unused).
_Extra = tuple[str, str, Protocol, int, str, str, str, tuple[tuple[str, str, float], ...], bool]
EXTRAS: tuple[_Extra, ...] = (
    ("orders", "shop", "http", 8080, "go", "POST", "/v1/orders",
     (("checkoutservice", "PlaceOrder", 1.0),), True),
    ("orders-db", "shop", "tcp", 5432, "none", "", "", (("orders", "", 0),), False),
    ("inventory", "shop", "grpc", 50051, "java", "POST", "/shop.Inventory/Reserve",
     (("orders", "op", 1.0), ("productcatalogservice", "GetProduct", 0.1)), True),
    ("user-profile", "shop", "http", 8080, "python", "GET", "/v1/users/{user}",
     (("frontend", "home", 0.5), ("frontend", "checkout", 1.0)), True),
    ("session-store", "shop", "tcp", 6379, "none", "", "", (("user-profile", "", 0),), False),
    ("search", "shop", "http", 8080, "java", "GET", "/search",
     (("frontend", "home", 0.1),), True),
    ("elasticsearch", "analytics", "http", 9200, "none", "POST", "/products/_search",
     (("search", "op", 1.0),), False),
    ("notifications", "platform", "grpc", 8080, "go", "POST",
     "/platform.Notifications/Send", (("orders", "op", 1.0),), True),
    ("fraud-check", "payments", "http", 8080, "python", "POST", "/v2/score",
     (("paymentservice", "Charge", 1.0),), True),
    ("ledger", "payments", "grpc", 9090, "java", "POST", "/payments.Ledger/Record",
     (("paymentservice", "Charge", 1.0),), True),
    ("pricing", "shop", "grpc", 8080, "go", "POST", "/shop.Pricing/Quote",
     (("checkoutservice", "PlaceOrder", 1.0), ("productcatalogservice", "GetProduct", 0.2)),
     True),
    ("promotions", "shop", "http", 8080, "node", "GET", "/v1/promotions/active",
     (("pricing", "op", 0.5),), True),
    ("tax", "shop", "grpc", 8080, "go", "POST", "/shop.Tax/Calculate",
     (("checkoutservice", "PlaceOrder", 1.0),), True),
    ("geo", "platform", "http", 8080, "go", "GET", "/v1/geocode",
     (("shippingservice", "GetQuote", 0.5),), True),
    ("feature-flags", "platform", "grpc", 8013, "go", "POST",
     "/flagd.evaluation.v1.Service/ResolveBoolean",
     (("frontend", "home", 0.2), ("productpage", "productpage", 0.2)), True),
    ("audit-log", "platform", "http", 8080, "go", "POST", "/v1/events",
     (("ledger", "op", 1.0), ("auth-service", "introspect", 0.05)), True),
    ("analytics-collector", "analytics", "http", 8080, "python", "POST", "/collect",
     (("frontend", "home", 0.3), ("frontend", "product", 0.3)), True),
    ("clickhouse", "analytics", "tcp", 9000, "none", "", "",
     (("analytics-collector", "", 0),), False),
    # Reached through the gateway (admin.example.com), not from inside the mesh.
    ("backoffice", "shop", "http", 8080, "python", "GET", "/admin/orders", (), True),
    ("legacy-reports", "legacy", "http", 8080, "java8", "GET", "/reports/daily",
     (("backoffice", "op", 0.5),), True),
    ("image-resizer", "shop", "http", 8080, "node", "GET", "/resize/{product}",
     (("frontend", "product", 0.3),), True),
    ("wishlist", "shop", "grpc", 8080, "go", "POST", "/shop.Wishlist/Get",
     (("frontend", "product", 0.1), ("frontend", "view_cart", 0.2)), True),
    ("returns", "shop", "http", 8080, "java", "GET", "/v1/returns",
     (("backoffice", "op", 0.3),), True),
    ("invoices", "payments", "http", 8080, "java", "POST", "/v1/invoices",
     (("orders", "op", 1.0),), True),
    ("refunds", "payments", "grpc", 8080, "go", "POST", "/payments.Refunds/Create",
     (("returns", "op", 1.0),), True),
    ("kyc", "payments", "http", 8080, "python", "POST", "/v1/verify",
     (("user-profile", "op", 0.05),), True),
    ("rate-limiter", "platform", "grpc", 8081, "go", "POST",
     "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
     (("auth-service", "introspect", 0.5),), True),
    ("config-service", "platform", "http", 8888, "java", "GET", "/application/default",
     (("ledger", "op", 0.02), ("orders", "op", 0.02)), True),
    ("ml-recommender", "analytics", "grpc", 8500, "python", "POST",
     "/tensorflow.serving.PredictionService/Predict",
     (("recommendationservice", "ListRecommendations", 0.5),), True),
    ("feature-store", "analytics", "tcp", 6379, "none", "", "",
     (("ml-recommender", "", 0),), False),
    ("gift-cards", "shop", "grpc", 8080, "go", "POST", "/shop.GiftCards/Redeem",
     (("checkoutservice", "PlaceOrder", 0.1),), True),
    ("store-locator", "shop", "http", 8080, "node", "GET", "/v1/stores",
     (("frontend", "home", 0.05),), True),
    ("chat-support", "shop", "http", 8080, "node", "POST", "/v1/conversations",
     (("frontend", "home", 0.02),), True),
    ("document-store", "platform", "http", 9000, "none", "PUT", "/invoices/{order}.pdf",
     (("invoices", "op", 1.0), ("returns", "op", 0.5)), False),
    ("smtp-relay", "platform", "tcp", 25, "none", "", "", (("notifications", "", 0),), False),
    ("translation", "shop", "grpc", 8080, "python", "POST", "/shop.Translation/Translate",
     (("productcatalogservice", "GetProduct", 0.05),), True),
    ("subscriptions", "payments", "http", 8080, "java", "GET", "/v1/subscriptions",
     (("user-profile", "op", 0.1),), True),
    ("coupons", "shop", "http", 8080, "node", "POST", "/v1/coupons/validate",
     (("promotions", "op", 0.5),), True),
    ("warehouse", "shop", "grpc", 8080, "java", "POST", "/shop.Warehouse/Allocate",
     (("inventory", "op", 0.3),), True),
    ("courier-gateway", "shop", "http", 8080, "node", "POST", "/v1/shipments",
     (("shippingservice", "ShipOrder", 1.0),), True),
    ("exchange-rates", "platform", "http", 8080, "python", "GET", "/v1/rates/latest",
     (("currencyservice", "Convert", 0.01),), True),
    ("payouts", "payments", "grpc", 8080, "java", "POST", "/payments.Payouts/Schedule",
     (("ledger", "op", 0.05),), True),
    ("reports-db", "legacy", "tcp", 5432, "none", "", "", (("legacy-reports", "", 0),), False),
    ("sitemap", "shop", "http", 8080, "go", "GET", "/sitemap.xml",
     (("frontend", "home", 0.01),), True),
)

# Requests from outside the mesh, through the ingress gateway.
ENTRIES: tuple[Entry, ...] = (
    Entry("bookinfo.example.com", "productpage", "productpage", 30),
    Entry("bookinfo.example.com", "productpage", "login", 1),
    Entry("bookinfo.example.com", "productpage", "api_products", 2),
    Entry("shop.example.com", "frontend", "home", 20),
    Entry("shop.example.com", "frontend", "product", 25),
    Entry("shop.example.com", "frontend", "view_cart", 6),
    Entry("shop.example.com", "frontend", "add_to_cart", 8),
    Entry("shop.example.com", "frontend", "checkout", 2),
    Entry("shop.example.com", "frontend", "set_currency", 2),
    Entry("admin.example.com", "backoffice", "op", 0.5),
)

BACKGROUND: tuple[Background, ...] = (
    # The checkout pods poll legacy billing for invoices to reconcile.
    Background("checkoutservice", "legacy-billing", "pending", 20.0),
    Background("legacy-reports", "legacy-billing", "pending", 60.0),
    Background("paymentservice", "vault", "login", 300.0),
    # Recommendations refresh their product cache.
    Background("recommendationservice", "productcatalogservice", "ListProducts", 30.0),
)

# User agents by the caller's language and protocol (what their HTTP/gRPC clients send).
USER_AGENTS: dict[tuple[str, str], str] = {
    ("python", "http"): "python-requests/2.31.0",
    ("python", "grpc"): "grpc-python/1.62.1 grpc-c/39.0.0 (linux; chttp2)",
    ("go", "http"): "Go-http-client/1.1",
    ("go", "grpc"): "grpc-go/1.62.1",
    ("java", "http"): "Apache-CXF/3.1.18",
    ("java", "grpc"): "grpc-java-netty/1.62.2",
    ("java8", "http"): "Apache-HttpClient/4.5.13 (Java/1.8.0_392)",
    ("java8", "grpc"): "grpc-java-netty/1.29.0",
    ("node", "http"): "axios/1.6.7",
    ("node", "grpc"): "grpc-node-js/1.10.1",
    ("dotnet", "http"): "dotnet-httpclient/8.0",
    ("dotnet", "grpc"): "grpc-dotnet/2.61.0 (.NET 8.0.2; CLR 8.0.2; net8.0; linux; x64)",
    ("ruby", "http"): "Ruby",
    ("ruby", "grpc"): "grpc-ruby/1.62.0",
}

BROWSER_AGENTS: tuple[str, ...] = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
)

# Instrumentation scope per language and span kind, as each language's SDK names it.
SCOPES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("go", "http", "server"): ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                               "0.49.0"),
    ("go", "http", "client"): ("go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
                               "0.49.0"),
    ("go", "grpc", "server"): (
        "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc", "0.49.0"),
    ("go", "grpc", "client"): (
        "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc", "0.49.0"),
    ("python", "http", "server"): ("opentelemetry.instrumentation.flask", "0.45b0"),
    ("python", "http", "client"): ("opentelemetry.instrumentation.requests", "0.45b0"),
    ("python", "grpc", "server"): ("opentelemetry.instrumentation.grpc", "0.45b0"),
    ("python", "grpc", "client"): ("opentelemetry.instrumentation.grpc", "0.45b0"),
    ("java", "http", "server"): ("io.opentelemetry.servlet-3.0", "1.32.0-alpha"),
    ("java", "http", "client"): ("io.opentelemetry.jaxrs-client-2.0", "1.32.0-alpha"),
    ("java", "grpc", "server"): ("io.opentelemetry.grpc-1.6", "1.32.0-alpha"),
    ("java", "grpc", "client"): ("io.opentelemetry.grpc-1.6", "1.32.0-alpha"),
    ("java8", "http", "server"): ("io.opentelemetry.tomcat-7.0", "1.9.0-alpha"),
    ("java8", "http", "client"): ("io.opentelemetry.apache-httpclient-4.0", "1.9.0-alpha"),
    ("node", "http", "server"): ("@opentelemetry/instrumentation-http", "0.49.1"),
    ("node", "http", "client"): ("@opentelemetry/instrumentation-http", "0.49.1"),
    ("node", "grpc", "server"): ("@opentelemetry/instrumentation-grpc", "0.49.1"),
    ("node", "grpc", "client"): ("@opentelemetry/instrumentation-grpc", "0.49.1"),
    ("dotnet", "http", "server"): ("OpenTelemetry.Instrumentation.AspNetCore", "1.8.1"),
    ("dotnet", "http", "client"): ("OpenTelemetry.Instrumentation.Http", "1.8.1"),
    ("dotnet", "grpc", "server"): ("OpenTelemetry.Instrumentation.AspNetCore", "1.8.1"),
    ("dotnet", "grpc", "client"): ("OpenTelemetry.Instrumentation.GrpcNetClient", "1.8.0-beta.1"),
    ("ruby", "http", "server"): ("OpenTelemetry::Instrumentation::Rack", "0.24.0"),
    ("ruby", "http", "client"): ("OpenTelemetry::Instrumentation::Net::HTTP", "0.22.0"),
}

SDK_LANGUAGE: dict[str, tuple[str, str]] = {
    "go": ("go", "1.24.0"),
    "python": ("python", "1.24.0"),
    "java": ("java", "1.36.0"),
    "java8": ("java", "1.9.0"),
    "node": ("nodejs", "1.22.0"),
    "dotnet": ("dotnet", "1.8.1"),
    "ruby": ("ruby", "1.4.0"),
}


@dataclass(frozen=True, slots=True)
class NamespaceSpec:
    name: str
    peer_authentication: Literal["STRICT", "PERMISSIVE"]
    istio_injection: bool = True
    description: str = ""


NAMESPACES: tuple[NamespaceSpec, ...] = (
    NamespaceSpec("istio-system", "STRICT", description="Istio control plane and gateways"),
    NamespaceSpec("bookinfo", "STRICT", description="Istio's Bookinfo sample"),
    NamespaceSpec("boutique", "STRICT", description="Google's Online Boutique"),
    NamespaceSpec("legacy", "PERMISSIVE", description="Legacy apps still reached in plaintext"),
    NamespaceSpec("payments", "STRICT", description="Payment data (crown jewels)"),
    NamespaceSpec("security", "STRICT", description="Secrets management"),
    NamespaceSpec("platform", "STRICT", description="Shared platform services"),
    NamespaceSpec("shop", "STRICT", description="Shop back-office services"),
    NamespaceSpec("analytics", "PERMISSIVE",
                  description="Analytics stack migrating to mTLS"),
    NamespaceSpec("default", "STRICT", istio_injection=False,
                  description="No sidecar injection (ad-hoc and debug pods)"),
)

MIN_SERVICES = 10
MAX_SERVICES = 60  # len(CORE) + len(EXTRAS) leaves a few spare extras
DEFAULT_SERVICES = 30

__all__ = [
    "BACKGROUND", "BROWSER_AGENTS", "CORE", "DEFAULT_SERVICES", "ENTRIES", "EXTRAS", "INGRESS",
    "MAX_SERVICES", "MIN_SERVICES", "NAMESPACES", "PRODUCT_IDS", "ROLLOUT_CALLER",
    "ROLLOUT_CALLER_OP", "ROLLOUT_CALLER_SERVICE", "ROLLOUT_SERVICE", "SCOPES", "SDK_LANGUAGE",
    "USER_AGENTS", "Background", "Child", "Entry", "NamespaceSpec", "OpSpec", "ServiceSpec",
]
