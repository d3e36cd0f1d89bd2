"""What a deleted VPS/APS leaves behind, as a mixin of `SubscriptionWorkflow` (SPEC §4, VPS row).

* Provider backup: before the VM is destroyed its node copies the disks and the add-on mail space
  (never the backup space) into `provider.<label>.*` (`activities.hypervisor`, which says why a
  fresh copy rather than the last automatic backup). It is kept `backup_retention_days` (catalog,
  ~14 days); the subscription's purge milestone, a durable timer, removes it and closes the service.
* Restore: `restore(RestoreRequest(onto=...))` on the deleted VPS, onto a newly ordered and paid VPS
  of the same customer, product and node, on a plan of the same or a higher tier (policy/plans.toml;
  the starter resolves both tiers and sends them in `RestoreTarget`; a deleted VPS without a plan:
  no tier check). It invoices the restore fee (500 CZK); the payment copies the backup onto the new
  VM (`restore_provider_backup`, idempotent) and tells the new VPS's workflow. Lower plan tier,
  unpaid target, expired backup: refused.
* Mail restore: `restore_mail(MailRestoreRequest)`, 500 CZK per domain (catalog `mail_restore_fee`),
  invoiced; the payment has the mail platform restore each domain from the provider backup.

Hooks in `subscription.py` call `_keep_provider_backup` (delete), `_purge_provider_backup` (purge),
`_request_vps_restore`/`_validate_vps_restore` (the `restore` update), `_vps_restore_paid` and
`_mail_restore_paid` (payments). Everything here is new behaviour behind `vps-provider-backup`, or
new handlers, so running services replay as before.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.subscription_host import SubscriptionHost

with workflow.unsafe.imports_passed_through():
    from activities.hypervisor import (
        COPY_TIMEOUTS,
        HypervisorActivities,
        ProviderBackupInput,
        node_task_queue,
        provider_backup_label,
    )
    from activities.mailer import NoticeKind
    from activities.platform import PlatformActivities, RestoreMailInput
    from policy.payments import InvoicePurpose, InvoiceRecord
    from policy.pricing import round_money
    from workflows import service_workflow_id
    from workflows.models import (
        BackupRestored,
        CommandResult,
        MailRestoreRequest,
        RestoreRequest,
        RestoreTarget,
        ServiceState,
    )

COPY_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": COPY_TIMEOUTS.start_to_close,
    "heartbeat_timeout": COPY_TIMEOUTS.heartbeat,
    "retry_policy": RetryPolicy(
        maximum_interval=timedelta(minutes=10),
        non_retryable_error_types=["VmNotFound", "BackupNotFound", "InvalidRequest"],
    ),
}
"""Copies heartbeat after each disk: a hung node fails the attempt and a retry takes over."""
MAIL_RESTORE_OPTIONS: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=30),
    "retry_policy": RetryPolicy(maximum_interval=timedelta(minutes=10)),
}
DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
RESTORABLE_TARGET_STATES = frozenset({ServiceState.ACTIVE})


class VpsRestoreMixin(SubscriptionHost):
    """Provider backup, restore onto a new VPS and mail restore; see the module docstring."""

    # ---------------------------------------------------------------- provider backup

    def _provider_label(self) -> str:
        return provider_backup_label(self.state.spec.service_id)

    def _provider_input(self, action: str, key: str, node: str, vm_name: str) -> ProviderBackupInput:
        return ProviderBackupInput(
            idempotency_key=self._key("provider-backup", action, key),
            service_id=self.state.spec.service_id,
            node=node,
            vm_name=vm_name,
            label=self._provider_label(),
        )

    async def _keep_provider_backup(self, at: datetime, key: str) -> bool:
        """Copy the doomed VPS's disks on its node before the delete; False (flagged) if it failed."""
        spec = self.state.spec
        try:
            result = await workflow.execute_activity_method(
                HypervisorActivities.keep_provider_backup,
                self._provider_input("keep", key, spec.node, spec.name or spec.service_id),
                task_queue=node_task_queue(spec.node),
                summary=f"keep provider backup of VPS {spec.service_id} on {spec.node} before deletion",
                **COPY_OPTIONS,
            )
        except ActivityError as exc:
            self._action_failed("keep_provider_backup", exc, at)
            return False
        self.state.provider_backup = result.volumes
        self._record("hypervisor", {"action": "keep_provider_backup", "node": spec.node}, at)
        return True

    async def _purge_provider_backup(self, at: datetime, key: str) -> None:
        """The retention timer ran out: the provider backup goes (raises ActivityError as any action)."""
        spec = self.state.spec
        await workflow.execute_activity_method(
            HypervisorActivities.purge_provider_backup,
            self._provider_input("purge", key, spec.node, spec.name or spec.service_id),
            task_queue=node_task_queue(spec.node),
            summary=f"purge provider backup of VPS {spec.service_id} on {spec.node}",
            **COPY_OPTIONS,
        )
        self.state.provider_backup = None
        self._record("hypervisor", {"action": "purge_provider_backup", "node": spec.node}, at)

    def _backup_gone(self) -> bool:
        state = self.state
        return (
            not state.restorable
            or state.provider_backup is None
            or (state.backup_until is not None and self._today() > state.backup_until)
        )

    # ---------------------------------------------------------------- restore onto a new VPS

    def _validate_vps_restore(self, request: RestoreRequest) -> None:
        state = self.state
        target = request.onto
        title = state.terms.title
        if target is None:
            raise ValueError(
                f"a {title} is restored only onto a newly ordered and paid server of the same or a higher "
                "plan tier: name it (hostlife vps restore SERVICE --onto NEW)"
            )
        if state.restored_onto is not None:
            raise ValueError(f"the provider backup was already restored onto {state.restored_onto}")
        if self._backup_gone():
            raise ValueError("the provider backup no longer exists")
        if target.service_id == state.spec.service_id:
            raise ValueError("restore goes onto a newly ordered server, not the deleted one")
        if target.customer_id != state.spec.customer.id:
            raise ValueError(f"{target.service_id} belongs to another customer")
        if target.product != state.spec.product:
            raise ValueError(
                f"{target.service_id} is a {target.product}, the backup is of a {state.spec.product}"
            )
        self._check_restore_plan(target)
        if target.state not in RESTORABLE_TARGET_STATES or target.expires_on < self._today():
            raise ValueError(
                f"{target.service_id} is not paid and active ({target.state.value}, paid until "
                f"{target.expires_on}): pay its order first"
            )
        if target.node != state.spec.node:
            raise ValueError(
                f"the provider backup is on {state.spec.node}; {target.service_id} is on {target.node} "
                f"(order it on {state.spec.node})"
            )

    def _check_restore_plan(self, target: RestoreTarget) -> None:
        """Same or higher plan tier (policy/plans.toml, tiers resolved by the starter). A VPS that runs
        without a plan has nothing to compare: no tier check (the node still checks disk sizes)."""
        own = self.state.changes.plan or self.state.spec.plan  # as CommerceMixin._current_plan
        if own is None:
            return
        if target.from_plan != own or target.from_plan_tier is None:
            raise ValueError(
                f"the deleted server is on plan {own}, the request resolved "
                f"{target.from_plan or 'no plan'}: ask again (the starter reads its plan from its status)"
            )
        if target.plan is None or target.plan_tier is None:
            raise ValueError(
                f"{target.service_id} has no plan on record; the deleted server is on {own}: restore "
                f"needs a plan of the same or a higher tier (start it with --plan)"
            )
        if target.plan_tier < target.from_plan_tier:
            raise ValueError(
                f"{target.service_id} is on plan {target.plan} (tier {target.plan_tier}), lower than the "
                f"deleted server's {own} (tier {target.from_plan_tier}): restore needs the same or a "
                "higher plan tier"
            )

    def _unchecked_plan_note(self) -> str:
        """Tell ops when the same-or-higher rule could not apply (the deleted VPS had no plan)."""
        if self.state.changes.plan or self.state.spec.plan:
            return ""
        return f" (no plan tier check: {self.state.spec.service_id} was handed over without a plan)"

    async def _request_vps_restore(self, request: RestoreRequest) -> CommandResult:
        async with self.lock:
            at = workflow.now()
            state = self.state
            existing = self._open_invoice(InvoicePurpose.RESTORE)
            if existing is not None:
                onto = state.restore_target.service_id if state.restore_target else "?"
                return CommandResult(
                    message=f"restore invoice VS {existing.variable_symbol} onto {onto} is already open",
                    variable_symbol=existing.variable_symbol,
                    amount=existing.amount,
                )
            state.restore_target = request.onto
            backup_until = state.backup_until or self._today()
            invoice = await self._issue_invoice(InvoicePurpose.RESTORE, self._restore_fee(), backup_until, at)
            self._record(
                "restore_requested",
                {"onto": request.onto.service_id if request.onto else None, "vs": invoice.variable_symbol},
                at,
            )
            self._refresh()
        self._wake()
        return CommandResult(
            message=(
                f"restore fee invoiced; once paid (by {backup_until}, while the backup exists) the provider "
                f"backup is copied onto {request.onto.service_id if request.onto else '?'}"
                + self._unchecked_plan_note()
            ),
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        )

    async def _vps_restore_paid(self, invoice: InvoiceRecord, at: datetime, payment_id: str) -> None:
        state = self.state
        target = state.restore_target
        if target is None:  # cannot happen: the invoice is issued with its target
            self._record("restore_failed", {"reason": "no restore target", "vs": invoice.variable_symbol}, at)
            return
        try:
            await workflow.execute_activity_method(
                HypervisorActivities.restore_provider_backup,
                self._provider_input("restore", payment_id, target.node, target.vm_name),
                task_queue=node_task_queue(target.node),
                summary=f"restore provider backup of {state.spec.service_id} onto {target.service_id}",
                **COPY_OPTIONS,
            )
        except ActivityError as exc:  # paid but not restored: ops must act (HostlifeAttention)
            self._action_failed("restore_provider_backup", exc, at)
            return
        state.restored_onto = target.service_id
        state.restore_target = None
        self._record("hypervisor", {"action": "restore_provider_backup", "onto": target.service_id}, at)
        await self._tell_restored(target.service_id)
        await self._notify(NoticeKind.RESTORED, f"payment:{payment_id}", at, self._base_facts())

    async def _tell_restored(self, service_id: str) -> None:
        handle = workflow.get_external_workflow_handle(service_workflow_id(service_id))
        try:
            await handle.signal(
                "restored_from_backup",
                BackupRestored(from_service_id=self.state.spec.service_id, label=self._provider_label()),
            )
        except Exception as exc:  # the new VPS is not (or no longer) run by hostlife
            self._record("restored_not_told", {"onto": service_id, "error": str(exc)})

    @workflow.signal
    def restored_from_backup(self, fact: BackupRestored) -> None:
        """This (new) VPS now holds a deleted VPS's provider backup: an audit line in its journal."""
        self._record("restored_from_backup", {"from": fact.from_service_id, "label": fact.label})

    # ---------------------------------------------------------------- mail restore

    @workflow.update
    async def restore_mail(self, request: MailRestoreRequest) -> CommandResult:
        """Invoice the mail restore (fee per domain); the payment restores the domains' mail."""
        async with self.lock:
            at = workflow.now()
            state = self.state
            amount = round_money(state.terms.mail_restore_fee * len(request.domains))
            backup_until = state.backup_until or self._today()
            invoice = await self._issue_invoice(InvoicePurpose.MAIL_RESTORE, amount, backup_until, at)
            state.mail_restores[invoice.variable_symbol] = request
            self._record(
                "mail_restore_requested",
                {"domains": request.domains, "onto": request.onto_service_id, "vs": invoice.variable_symbol},
                at,
            )
            self._refresh()
        self._wake()
        return CommandResult(
            message=(
                f"mail restore of {len(request.domains)} domain(s) invoiced "
                f"({state.terms.mail_restore_fee} each); pay by {backup_until}"
            ),
            variable_symbol=invoice.variable_symbol,
            amount=invoice.amount,
        )

    @restore_mail.validator
    def _validate_restore_mail(self, request: MailRestoreRequest) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        state = self.state
        if not state.terms.on_hypervisor or state.terms.mail_restore_fee <= 0:
            raise ValueError(f"{state.terms.title} has no paid mail restore")
        if state.billing_state is not ServiceState.DELETED:
            raise ValueError(
                f"mail is restored from a deleted server's backup; it is {state.billing_state.value}"
            )
        if self._backup_gone():
            raise ValueError("the provider backup no longer exists")
        bad = [d for d in request.domains if not DOMAIN_NAME.match(d)]
        if bad:
            raise ValueError(f"not domain names (lower case, e.g. example.cz): {', '.join(bad)}")
        if len(set(request.domains)) != len(request.domains):
            raise ValueError("a domain is named twice")
        pending = self._open_invoice(InvoicePurpose.MAIL_RESTORE)
        if pending is not None:
            raise ValueError(f"a mail restore invoice (VS {pending.variable_symbol}) is already open")

    async def _mail_restore_paid(self, invoice: InvoiceRecord, at: datetime, payment_id: str) -> None:
        state = self.state
        request = state.mail_restores.get(invoice.variable_symbol)
        if request is None:
            self._record(
                "restore_failed", {"reason": "no mail restore request", "vs": invoice.variable_symbol}, at
            )
            return
        try:
            await workflow.execute_activity_method(
                PlatformActivities.restore_mail,
                RestoreMailInput(
                    idempotency_key=self._key("mail-restore", payment_id),
                    service_id=state.spec.service_id,
                    backup_label=self._provider_label(),
                    onto_service_id=request.onto_service_id,
                    domains=request.domains,
                ),
                summary=f"restore mail of {len(request.domains)} domain(s) onto {request.onto_service_id}",
                **MAIL_RESTORE_OPTIONS,
            )
        except ActivityError as exc:
            self._action_failed("restore_mail", exc, at)
            return
        self._record("mail_restored", {"domains": request.domains, "onto": request.onto_service_id}, at)
