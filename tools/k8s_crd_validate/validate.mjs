// Validate prometheus-operator custom resources (PodMonitor, ServiceMonitor) read as a JSON array on
// stdin against the operator's CRD schemas (compiled by @kubernetes-models/prometheus-operator,
// pinned in package-lock.json). Prints one line per problem and exits 1 when any; 0 when all pass.
// Usage: node validate.mjs < resources.json      (tests/deploy/test_manifests.py runs it)
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

const KINDS = { PodMonitor, ServiceMonitor };
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const docs = JSON.parse(Buffer.concat(chunks).toString("utf8"));
let bad = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${doc.metadata?.name ?? "?"}`;
  const Model = KINDS[doc.kind];
  if (!Model || doc.apiVersion !== "monitoring.coreos.com/v1") {
    console.log(`${name}: no schema for ${doc.apiVersion} ${doc.kind}`);
    bad++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${name}: ok`);
  } catch (err) {
    console.log(`${name}: ${err.message.replace(/\s+/g, " ")}`);
    bad++;
  }
}
process.exit(bad ? 1 : 0);
