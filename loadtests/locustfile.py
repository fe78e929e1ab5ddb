"""Load test of the fanout gateway: a realistic mix, and a slow-backend scenario.

Self-contained (imports only locust and the standard library) because Kubernetes ships this
file as a ConfigMap (k8s/loadtest). Run it through `python -m loadtests.run` on one machine,
or directly:

    FANOUT_SCENARIO=mix  locust -f loadtests/locustfile.py --host http://127.0.0.1:8080
    FANOUT_SCENARIO=slow locust -f loadtests/locustfile.py --host http://127.0.0.1:8080

Scenarios (user classes; pick with FANOUT_SCENARIO, default `mix`):

* `mix` -> `MixUser`: browses like a frontend, with think time (and a random first pause
  within it): product pages (3-call fan-out with a dependent call), the home page (2 calls),
  the catalog passthrough and, when FANOUT_USERS_WEIGHT > 0, the SQL-backed
  `/api/users/{id}` of examples/demo.yaml (two SQL calls, the users service, the catalog).
* `slow` -> `SlowBackendUser`: no think time, every request asks the backends to be slow
  (`?delay=` is forwarded to them by the routes' `forward_query`), so each user holds one
  request in flight nearly all the time: N users = N requests in flight at the gateway.
* `all`: both, weighted 1:1.

Why an environment variable and not only class names on the command line: the Kubernetes
master runs without naming a class, and locust would then run every class; a default
scenario keeps that run the realistic mix. Naming a class still works for the selected ones.

Environment:

    FANOUT_SCENARIO       mix | slow | all                                   (mix)
    FANOUT_THINK_MIN_S    mix: shortest think time between requests, seconds (1)
    FANOUT_THINK_MAX_S    mix: longest think time, seconds                   (3)
    FANOUT_USERS_WEIGHT   mix: weight of /api/users/{id} (needs its route)   (0: off)
    FANOUT_SLOW_PATH      slow: the path requested                           (/api/home)
    FANOUT_SLOW_DELAY     slow: the backend delay asked for                  (5s)
    FANOUT_SHED_OK        1: a 503 with Retry-After (load shedding) is recorded as success
                          under the name "shed: 503 + Retry-After" instead of as a failure;
                          for overload runs, where shedding is the expected answer   (0)
    FANOUT_TIMEOUT_S      client connect and read timeout, seconds           (120)

Request names are route templates (`/api/products/{id}`), so the statistics group by route.
Every user honours Retry-After on a shed response, as a well-behaved client would: it
waits that long, plus up to as long again at random, before its next request. Without the
jitter, clients shed together come back together: the overload run showed waves every
Retry-After seconds, each one slowing everything.
"""

from __future__ import annotations

import os
import random
import time

from locust import FastHttpUser, between, constant, task

SCENARIO = os.environ.get("FANOUT_SCENARIO", "mix")
SCENARIOS = ("mix", "slow", "all")
if SCENARIO not in SCENARIOS:
    raise ValueError(f"FANOUT_SCENARIO={SCENARIO!r}: expected one of {', '.join(SCENARIOS)}")

THINK_MIN_S = float(os.environ.get("FANOUT_THINK_MIN_S", "1"))
THINK_MAX_S = float(os.environ.get("FANOUT_THINK_MAX_S", "3"))
USERS_WEIGHT = int(os.environ.get("FANOUT_USERS_WEIGHT", "0"))
SLOW_PATH = os.environ.get("FANOUT_SLOW_PATH", "/api/home")
SLOW_DELAY = os.environ.get("FANOUT_SLOW_DELAY", "5s")
SHED_OK = os.environ.get("FANOUT_SHED_OK", "0") == "1"
TIMEOUT_S = float(os.environ.get("FANOUT_TIMEOUT_S", "120"))

SHED_NAME = "shed: 503 + Retry-After"
PRODUCT_IDS = 1000  # the catalog demo service's products are 1..1000
USER_IDS = 1000  # a slice of the users table (services/userdb.py has 100,000)


class GatewayUser(FastHttpUser):
    """What both scenarios share: timeouts, route-template names, Retry-After handling."""

    abstract = True
    # The slow scenario queues for its upstream slot by design (docs/capacity/README.md):
    # the client must wait longer than the gateway's own deadlines, so that the gateway,
    # not the load generator, decides when a request has taken too long.
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S

    def get(self, path: str, name: str) -> None:
        """GET `path`, recorded under `name`; a shed 503 is handled as described above."""
        with self.client.get(path, name=name, catch_response=True) as response:
            retry_after = response.headers.get("Retry-After") if response.headers else None
            if response.status_code == 503 and retry_after is not None:
                if SHED_OK:
                    # Renaming before the context exits moves the sample to its own row, so
                    # admitted and shed latencies are reported apart.
                    response.request_meta["name"] = SHED_NAME
                    response.success()
                else:
                    response.failure(f"shed: 503, Retry-After {retry_after}")
            elif response.status_code == 200:
                response.success()
            elif response.status_code == 0:  # no HTTP answer: keep the client's own error
                response.failure(response.error)
            else:
                response.failure(f"status {response.status_code}")
        if retry_after is not None and response.status_code == 503:
            # locust monkey-patches time.sleep to yield to other users (gevent)
            time.sleep(_seconds(retry_after) * random.uniform(1.0, 2.0))


def _seconds(retry_after: str) -> float:
    """Retry-After as delta-seconds; an HTTP-date (not sent by the gateway) counts as 1s."""
    try:
        return max(0.0, float(retry_after))
    except ValueError:
        return 1.0


class MixUser(GatewayUser):
    """A frontend user: product pages most, then the home page, the passthrough, users."""

    weight = 1 if SCENARIO in ("mix", "all") else 0
    wait_time = between(THINK_MIN_S, THINK_MAX_S)

    def on_start(self) -> None:
        # Start at a random point of the think time: users spawned together would otherwise
        # all click at once, a burst a real audience arriving over time does not make.
        time.sleep(random.uniform(0, THINK_MAX_S))

    @task(6)
    def product_page(self) -> None:
        self.get(f"/api/products/{random.randint(1, PRODUCT_IDS)}", "/api/products/{id}")

    @task(3)
    def home(self) -> None:
        self.get("/api/home", "/api/home")

    @task(2)
    def catalog_passthrough(self) -> None:
        self.get(
            f"/api/catalog/products/{random.randint(1, PRODUCT_IDS)}",
            "/api/catalog/{rest:path}",
        )

    @task(USERS_WEIGHT)
    def user_page(self) -> None:
        # A task of weight 0 is never picked: the route exists only where a database does.
        self.get(f"/api/users/{random.randint(1, USER_IDS)}", "/api/users/{id}")


class SlowBackendUser(GatewayUser):
    """Holds one request in flight at all times against a deliberately slow backend."""

    weight = 1 if SCENARIO in ("slow", "all") else 0
    wait_time = constant(0)

    @task
    def slow(self) -> None:
        separator = "&" if "?" in SLOW_PATH else "?"
        self.get(f"{SLOW_PATH}{separator}delay={SLOW_DELAY}", f"{SLOW_PATH}?delay={SLOW_DELAY}")
