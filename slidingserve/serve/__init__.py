"""The Ray Serve application: SLO-tagged OpenAI API, slack router, live predictor link.

Map:
  config.py          ServeAppConfig (the ``args`` of ``app:build``), validated
  slo_headers.py     x-slo-tier / x-slo-ttft-ms / x-slo-tpot-ms -> RequestSLO
  auth.py            API keys bound to tiers (constant-time compare)
  openai_api.py      request bodies and response/SSE shapes
  ingress.py         IngressService + FastAPI routes
  engine_host.py     one replica: AsyncLLM + SlidingServe scheduler, load, admission
  load.py            ReplicaLoad: routing stats and the predicted-TTFT formula
  router.py          SlackRouter (ray.serve.request_router), p2c fallback
  predictor_link.py  step samples -> predictor actor, model versions -> engine (hot swap)
  metrics.py         ray.util.metrics, tier-tagged
  deployments.py     the Engine and Ingress deployments;  app.py: the builder
  dashboards.py      Grafana dashboards + push;  bench_http.py: open-loop HTTP load
  cli.py             slidingserve serve | dashboards push/render | bench http
"""
