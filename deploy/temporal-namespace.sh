#!/bin/sh
# Registers hostlife's namespace (run by the temporal-namespace service, temporalio/admin-tools image).
# Retention is how long a closed service's history stays readable; key ring entries must outlive it.
set -eu
ns="${HOSTLIFE_NAMESPACE:-hostlife}"
until temporal operator cluster health --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1; do sleep 2; done
temporal operator namespace describe -n "$ns" --address "$TEMPORAL_ADDRESS" >/dev/null 2>&1 \
  || temporal operator namespace create -n "$ns" --retention "${HOSTLIFE_RETENTION:-30d}" --address "$TEMPORAL_ADDRESS"
echo "namespace $ns is registered"
