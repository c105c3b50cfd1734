"""Write deploy/kubernetes/grafana/llmco2-dashboard.json (the Grafana dashboard of the sidecar's metrics).

    python tools/make_dashboard.py           # regenerate
    python tools/make_dashboard.py --check   # exit 1 when the committed JSON differs from this script's

tests/deploy/test_dashboard.py checks that every query names a metric the sidecar exports.
"""
import sys
from pathlib import Path

DASHBOARD_PATH = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "grafana" / "llmco2-dashboard.json"
import json
SEL='namespace=~"$namespace", pod=~"$pod"'
def sel(extra=""):
    return "{" + SEL + (", " + extra if extra else "") + "}"
OUT = sel('kind="output"')
ds={"type":"prometheus","uid":"${datasource}"}
panels=[]
y=0
def panel(kind,title,exprs,unit,x,w,h=8,desc="",legend=None):
    p={"type":kind,"title":title,"description":desc,"gridPos":{"x":x,"y":y,"w":w,"h":h},"datasource":ds,
       "fieldConfig":{"defaults":{"unit":unit},"overrides":[]},
       "targets":[{"refId":chr(65+i),"expr":e,"legendFormat":(legend[i] if legend else "__auto"),"datasource":ds} for i,e in enumerate(exprs)]}
    if kind=="timeseries":
        p["options"]={"legend":{"displayMode":"list","placement":"bottom"},"tooltip":{"mode":"multi"}}
    if kind=="stat":
        p["options"]={"reduceOptions":{"calcs":["lastNotNull"],"fields":"","values":False},"graphMode":"none"}
    panels.append(p)
panels.append({"type":"row","title":"Carbon and energy","collapsed":False,"gridPos":{"x":0,"y":0,"w":24,"h":1},"panels":[]}); y=1
panel("stat","Carbon in range (gCO2e)",[f"sum(increase(llmco2_carbon_grams_total{sel()}[$__range]))"],"none",0,6,4,
      "Operational + embodied carbon of finished requests and unattributed idle time over the dashboard's range")
# the predicted and the measured series describe the same energy: per sidecar, measured where it measures
MEASURED, PREDICTED = sel('source="measured"'), sel('source="predicted"')
ENERGY_RANGE = (f"sum(sum by (namespace, pod) (increase(llmco2_energy_joules_total{MEASURED}[$__range])) "
                f"or sum by (namespace, pod) (increase(llmco2_energy_joules_total{PREDICTED}[$__range])))")
panel("stat","Energy in range (kWh)",[f"{ENERGY_RANGE} / 3.6e6"],"kwatth",6,6,4,
      "Per sidecar, measured energy (--measure: NVML GPU + RAPL host) where it measures, else predicted (GPU prefill, "
      "decode + serving engine + idle); the two sources describe the same energy and are never added")
panel("stat","gCO2e per 1k output tokens",[f"1000 * sum(increase(llmco2_carbon_grams_total{sel()}[$__range])) / sum(increase(llmco2_request_tokens_sum{OUT}[$__range]))"],"none",12,6,4,
      "Carbon over output tokens of finished requests, idle carbon included (the SCI-for-AI style unit)")
panel("stat","Requests finished in range",[f"sum(increase(llmco2_requests_finished_total{sel()}[$__range]))"],"none",18,6,4)
y=5
panel("timeseries","Carbon rate (gCO2e/h) by kind",[f"3600 * sum by (kind) (rate(llmco2_carbon_grams_total{sel()}[5m]))"],"none",0,12,8,
      "operational = energy x PUE x grid intensity; embodied = GPU die carbon charged by GPU time",["{{kind}}"])
panel("timeseries","Power (W) by phase and source",[f"sum by (phase, source) (rate(llmco2_energy_joules_total{sel()}[5m]))"],"watt",12,12,8,
      "J/s accounted: predicted prefill, decode (GPU), serving (host + attributed gaps), idle (unattributed); "
      "with --measure also measured gpu and host (the same energy, metered: compare, do not add)",["{{phase}} ({{source}})"])
y=13
panel("timeseries","Carbon per request (gCO2e), p50 / p90 / p99",
      [f"histogram_quantile({q}, sum by (le) (rate(llmco2_request_carbon_grams_bucket{sel()}[5m])))" for q in (0.5,0.9,0.99)],"none",0,12,8,
      "", ["p50","p90","p99"])
panel("timeseries","Energy per request (J), p50 / p90 / p99",
      [f"histogram_quantile({q}, sum by (le) (rate(llmco2_request_energy_joules_bucket{sel()}[5m])))" for q in (0.5,0.9,0.99)],"joule",12,12,8,
      "", ["p50","p90","p99"])
y=21
panels.append({"type":"row","title":"Sidecar health","collapsed":False,"gridPos":{"x":0,"y":y,"w":24,"h":1},"panels":[]}); y=22
panel("timeseries","Requests finished/s by outcome",[f"sum by (outcome) (rate(llmco2_requests_finished_total{sel()}[5m]))"],"reqps",0,8,8,"",["{{outcome}}"])
panel("timeseries","Where a held response waits (p99, s)",
      [f"histogram_quantile(0.99, sum by (le) (rate(llmco2_finish_lag_seconds_bucket{sel()}[5m])))",
       f"histogram_quantile(0.99, sum by (le) (rate(llmco2_record_latency_seconds_bucket{sel()}[5m])))",
       f"histogram_quantile(0.99, sum by (le) (rate(llmco2_event_loop_lag_seconds_bucket{sel()}[5m])))"],"s",8,8,8,
      "finish lag: engine finish -> sidecar; record latency: arrival -> record; event-loop lag: a starved sidecar (give it CPU)",
      ["finish lag","record latency","event-loop lag"])
panel("timeseries","Ingest: steps/s accepted and rejected",[f"sum by (outcome) (rate(llmco2_ingest_steps_total{sel()}[5m]))",
      f"sum by (field) (rate(llmco2_ingest_rejections_total{sel()}[5m]))"],"ops",16,8,8,
      "rejections by offending field: a hook or engine sending bad steps",["steps {{outcome}}","rejected: {{field}}"])
y=30
panel("timeseries","Engine streams open",[f"sum(llmco2_streams_open{sel()})"],"none",0,8,6)
panel("timeseries","Pipeline queue depth",[f"max(llmco2_pipeline_queue_depth{sel()})"],"none",8,8,6,
      "ingested messages waiting for the predictor (backpressure above max_pending_steps)")
panel("timeseries","Measured windows/s and dropped announcements/s",[f"sum(rate(llmco2_measured_windows_total{sel()}[5m]))",
      f"sum(rate(llmco2_watch_dropped_total{sel()}[5m]))"],"ops",16,8,6,"",["measured windows","watch dropped"])
y=36
panels.append({"type":"row","title":"Grid intensity and disk","collapsed":False,"gridPos":{"x":0,"y":y,"w":24,"h":1},"panels":[]}); y=37
panel("timeseries","Grid intensity in use (gCO2e/kWh)",[f"max(llmco2_grid_intensity_g_per_kwh{sel()})"],"none",0,8,6,
      "the figure new records use (--grid source: static region, CSV series or a live API)")
panel("timeseries","Grid source on fallback, polls/s by outcome",[f"max(llmco2_grid_fallback{sel()})",
      f"sum by (outcome) (rate(llmco2_grid_polls_total{sel()}[5m]))"],"none",8,8,6,
      "fallback 1: a live or CSV source is replaced by the static region (see the sidecar log)",["fallback","polls {{outcome}}"])
panel("timeseries","Disk writable, dead-lettered units/s",[f"min(llmco2_disk_ok{sel()})",
      f"sum by (reason) (rate(llmco2_dead_letter_total{sel()}[5m]))"],"none",16,8,6,
      "disk_ok 0: the journal or carbon log cannot be written (messages not acknowledged)",["disk ok","dead letter: {{reason}}"])
dash={"title":"llmco2: carbon of LLM serving","uid":"llmco2-main","schemaVersion":39,"version":1,"editable":True,
 "description":"Per-request carbon accounting (llmco2 sidecar); every query names a metric the sidecar exports (tests/deploy/test_dashboard.py)",
 "tags":["llmco2","vllm","carbon"],"timezone":"browser","refresh":"30s","time":{"from":"now-6h","to":"now"},
 "annotations":{"list":[]},
 "templating":{"list":[
   {"type":"datasource","name":"datasource","label":"Data Source","query":"prometheus","current":{}},
   {"type":"query","name":"namespace","label":"Namespace","datasource":ds,"query":{"query":"label_values(llmco2_streams_open, namespace)","refId":"ns"},
    "definition":"label_values(llmco2_streams_open, namespace)","includeAll":True,"allValue":".*","multi":True,"refresh":2,"current":{}},
   {"type":"query","name":"pod","label":"Pod","datasource":ds,"query":{"query":"label_values(llmco2_streams_open{namespace=~\"$namespace\"}, pod)","refId":"pod"},
    "definition":"label_values(llmco2_streams_open{namespace=~\"$namespace\"}, pod)","includeAll":True,"allValue":".*","multi":True,"refresh":2,"current":{}}]},
 "panels":panels}
for i,p in enumerate(panels): p["id"]=i+1
text = json.dumps(dash, indent=2) + "\n"
if "--check" in sys.argv[1:]:
    sys.exit(0 if DASHBOARD_PATH.read_text() == text else 1)
DASHBOARD_PATH.write_text(text)
