"""CustomerAccountWorkflow: the customer's prepaid credit ("zálohový účet"), one per customer.

Money moves only through updates: `top_up`, `debit`, `refund` and `bulk_debit`. Each carries the
caller's idempotency key; a key seen before is answered with its first result and moves nothing, so
a retried activity or a redelivered webhook never takes (or gives) money twice. The handlers are
synchronous: one runs to its end before the next starts, so racing debits are decided one after
another against the real balance, which therefore never goes negative.

A debit the balance does not cover is not an error: the answer is `ok=False` with the missing
amount and the key is not consumed, so the caller may retry the same debit later (SPEC §3.9, the
daily automatic-renewal retry). Requests that can never be right (a non-positive amount, another
currency, a top-up outside the profile's limits, a key reused for a different request) are refused
by validators, before they reach history.

The account never ends. It continues as new every `continue_after` movements (or when the server
suggests it), carrying its balance, the newest `ledger_limit` ledger entries (older ones are summed
into the statement's opening balance) and the newest `key_memory` idempotency keys.
"""

from __future__ import annotations

from decimal import Decimal

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.account_models import (
        ZERO,
        AccountBalance,
        AccountState,
        BulkDebitRequest,
        BulkDebitResult,
        CreditLimits,
        CustomerAccountInput,
        DebitRequest,
        LedgerEntry,
        MovementKind,
        MovementResult,
        RefundRequest,
        Remembered,
        Statement,
        TopUpRequest,
    )


def _fingerprint(kind: str, *parts: object) -> str:
    return "|".join([kind, *("" if p is None else str(p) for p in parts)])


@workflow.defn
class CustomerAccountWorkflow:
    @workflow.init
    def __init__(self, start: CustomerAccountInput) -> None:
        self.state = start.state or AccountState(
            customer_id=start.customer_id, currency=start.currency, limits=start.limits
        )
        self.continue_after = start.continue_after
        self.ledger_limit = start.ledger_limit
        self.key_memory = start.key_memory
        self.moved = 0

    @workflow.run
    async def run(self, start: CustomerAccountInput) -> None:
        self._show()
        await workflow.wait_condition(
            lambda: self.moved >= self.continue_after or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        state = self.state
        dropped = state.ledger[: -self.ledger_limit]
        if dropped:
            state.opening_balance = dropped[-1].balance_after
            state.opening_sequence = dropped[-1].sequence
            state.ledger = state.ledger[-self.ledger_limit :]
        state.keys = dict(list(state.keys.items())[-self.key_memory :])
        state.runs += 1
        workflow.logger.info(
            "credit account continues as new",
            extra={"customer_id": state.customer_id, "balance": str(state.balance), "runs": state.runs},
        )
        workflow.continue_as_new(start.model_copy(update={"state": state}))

    # ---------------------------------------------------------------- movements

    @workflow.update
    def top_up(self, request: TopUpRequest) -> MovementResult:
        """Money paid into the account; refused (with the reason) if a limit would be broken."""
        if (answer := self._repeated(request.idempotency_key)) is not None:
            return answer
        if (problem := self._top_up_problem(request.amount)) is not None:
            # The validator saw an older balance; a top-up accepted alongside this one got in first.
            raise ApplicationError(problem, type="CreditLimitExceeded", non_retryable=True)
        return self._move(MovementKind.TOP_UP, request, self._fp_top_up(request))

    @top_up.validator
    def _validate_top_up(self, request: TopUpRequest) -> None:
        self._check_common(
            request.idempotency_key, request.currency, self._fp_top_up(request), [request.amount]
        )
        if request.idempotency_key in self.state.keys:
            return  # a retry: answered from memory, whatever the balance is now
        if (problem := self._top_up_problem(request.amount)) is not None:
            raise ValueError(problem)

    @workflow.update
    def debit(self, request: DebitRequest) -> MovementResult:
        """Take money for a service; `ok=False` with `missing` when the balance does not cover it all."""
        if (answer := self._repeated(request.idempotency_key)) is not None:
            return answer
        if request.amount > self.state.balance:
            return self._short(request.amount)
        return self._move(MovementKind.DEBIT, request, self._fp_debit(request), service_id=request.service_id)

    @debit.validator
    def _validate_debit(self, request: DebitRequest) -> None:
        self._check_common(
            request.idempotency_key, request.currency, self._fp_debit(request), [request.amount]
        )

    @workflow.update
    def refund(self, request: RefundRequest) -> MovementResult:
        """Money back to the account (a cancelled debit, a downgrade remainder)."""
        if (answer := self._repeated(request.idempotency_key)) is not None:
            return answer
        if (problem := self._refund_problem(request)) is not None:
            raise ApplicationError(problem, type="CreditLimitExceeded", non_retryable=True)
        result = self._move(
            MovementKind.REFUND,
            request,
            self._fp_refund(request),
            service_id=request.service_id,
            refund_of=request.refund_of,
        )
        if request.refund_of is not None:
            original = self.state.keys[request.refund_of]
            original.refunded += request.amount
        return result

    @refund.validator
    def _validate_refund(self, request: RefundRequest) -> None:
        self._check_common(
            request.idempotency_key, request.currency, self._fp_refund(request), [request.amount]
        )
        if request.idempotency_key in self.state.keys:
            return
        if (problem := self._refund_problem(request)) is not None:
            raise ValueError(problem)

    @workflow.update
    def bulk_debit(self, request: BulkDebitRequest) -> BulkDebitResult:
        """SPEC §3.10: every item is debited, or none is and the answer says how much is missing."""
        remembered = self.state.keys.get(request.idempotency_key)
        if remembered is not None and remembered.bulk is not None:
            return remembered.bulk.model_copy(update={"repeated": True})
        state = self.state
        total = request.total
        if total > state.balance:
            return BulkDebitResult(
                ok=False, total=total, balance=state.balance, missing=total - state.balance
            )
        entries = [
            self._entry(
                MovementKind.DEBIT,
                item.amount,
                request.idempotency_key,
                service_id=item.service_id,
                reason=request.reason,
                batch_key=request.idempotency_key,
            )
            for item in request.items
        ]
        result = BulkDebitResult(ok=True, total=total, balance=state.balance, entries=entries)
        state.keys[request.idempotency_key] = Remembered(fingerprint=self._fp_bulk(request), bulk=result)
        self._moved(len(entries))
        return result

    @bulk_debit.validator
    def _validate_bulk(self, request: BulkDebitRequest) -> None:
        self._check_common(
            request.idempotency_key,
            request.currency,
            self._fp_bulk(request),
            [item.amount for item in request.items],
        )

    @workflow.update
    def change_limits(self, limits: CreditLimits) -> AccountBalance:
        """A profile's limits changed: they apply to movements from now on, the balance stays."""
        self.state.limits = limits
        self._show()
        return self.balance()

    # ---------------------------------------------------------------- queries

    @workflow.query
    def balance(self) -> AccountBalance:
        state = self.state
        return AccountBalance(
            customer_id=state.customer_id,
            currency=state.currency,
            balance=state.balance,
            limits=state.limits,
            movements=state.sequence,
        )

    @workflow.query
    def statement(self, since_sequence: int = 0) -> Statement:
        """Entries after `since_sequence`, with the balance before them, to build a statement from."""
        state = self.state
        entries = [e for e in state.ledger if e.sequence > since_sequence]
        # Nothing after `since_sequence` (the ledger always holds the newest entry): opening = now.
        opening = entries[0].balance_after + self._signed(entries[0], -1) if entries else state.balance
        return Statement(
            customer_id=state.customer_id,
            currency=state.currency,
            opening_balance=opening,
            closing_balance=state.balance,
            entries=entries,
            complete=since_sequence >= state.opening_sequence,
        )

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def _signed(entry: LedgerEntry, factor: int = 1) -> Decimal:
        """The entry's effect on the balance (times `factor`: -1 undoes it)."""
        sign = -1 if entry.kind is MovementKind.DEBIT else 1
        return entry.amount * sign * factor

    def _fp_top_up(self, request: TopUpRequest) -> str:
        return _fingerprint("top_up", request.amount, request.payment_id)

    def _fp_debit(self, request: DebitRequest) -> str:
        return _fingerprint("debit", request.amount, request.service_id)

    def _fp_refund(self, request: RefundRequest) -> str:
        return _fingerprint("refund", request.amount, request.service_id, request.refund_of)

    def _fp_bulk(self, request: BulkDebitRequest) -> str:
        return _fingerprint("bulk", *(f"{i.service_id}={i.amount}" for i in request.items))

    def _check_common(self, key: str, currency: str | None, fingerprint: str, amounts: list[Decimal]) -> None:
        state = self.state
        for amount in amounts:
            if amount <= 0:
                raise ValueError(f"amount must be positive, got {amount}")
        if currency is not None and currency != state.currency:
            raise ValueError(
                f"the account of customer {state.customer_id} is in {state.currency}, not {currency}"
            )
        remembered = state.keys.get(key)
        if remembered is not None and remembered.fingerprint != fingerprint:
            raise ValueError(
                f"idempotency key {key!r} was already used for a different request ({remembered.fingerprint})"
            )

    def _top_up_problem(self, amount: Decimal) -> str | None:
        limits, state = self.state.limits, self.state
        if limits.min_top_up is not None and amount < limits.min_top_up:
            return f"a top-up is at least {limits.min_top_up} {state.currency}, got {amount}"
        if limits.max_top_up is not None and amount > limits.max_top_up:
            return f"a top-up is at most {limits.max_top_up} {state.currency}, got {amount}"
        return self._balance_problem(amount, "top-up")

    def _refund_problem(self, request: RefundRequest) -> str | None:
        if request.refund_of is not None:
            original = self.state.keys.get(request.refund_of)
            entry = original.movement.entry if original and original.movement else None
            if entry is None or entry.kind is not MovementKind.DEBIT:
                return f"no debit with idempotency key {request.refund_of!r} to refund"
            assert original is not None
            left = entry.amount - original.refunded
            if request.amount > left:
                return (
                    f"debit {request.refund_of!r} was {entry.amount}; at most {left} of it is left to refund"
                )
        return self._balance_problem(request.amount, "refund")

    def _balance_problem(self, amount: Decimal, what: str) -> str | None:
        state = self.state
        ceiling = state.limits.max_balance
        if ceiling is not None and state.balance + amount > ceiling:
            room = max(ceiling - state.balance, ZERO)
            return (
                f"the {what} would make the balance {state.balance + amount} {state.currency}, "
                f"above the limit of {ceiling}; at most {room} can be added now"
            )
        return None

    def _repeated(self, key: str) -> MovementResult | None:
        remembered = self.state.keys.get(key)
        if remembered is None or remembered.movement is None:
            return None
        return remembered.movement.model_copy(update={"repeated": True})

    def _short(self, amount: Decimal) -> MovementResult:
        balance = self.state.balance
        return MovementResult(ok=False, balance=balance, missing=amount - balance)

    def _move(
        self,
        kind: MovementKind,
        request: TopUpRequest | DebitRequest | RefundRequest,
        fingerprint: str,
        *,
        service_id: str | None = None,
        refund_of: str | None = None,
    ) -> MovementResult:
        entry = self._entry(
            kind,
            request.amount,
            request.idempotency_key,
            service_id=service_id,
            reason=request.reason,
            refund_of=refund_of,
        )
        result = MovementResult(ok=True, balance=self.state.balance, entry=entry)
        self.state.keys[request.idempotency_key] = Remembered(fingerprint=fingerprint, movement=result)
        self._moved(1)
        return result

    def _entry(
        self,
        kind: MovementKind,
        amount: Decimal,
        key: str,
        *,
        service_id: str | None = None,
        reason: str = "",
        batch_key: str | None = None,
        refund_of: str | None = None,
    ) -> LedgerEntry:
        state = self.state
        balance = state.balance - amount if kind is MovementKind.DEBIT else state.balance + amount
        if balance < 0:  # unreachable: every debit path checks the balance first
            raise ApplicationError("the balance would go negative", type="CreditOverdraw", non_retryable=True)
        state.balance = balance
        state.sequence += 1
        entry = LedgerEntry(
            sequence=state.sequence,
            at=workflow.now(),
            kind=kind,
            amount=amount,
            balance_after=balance,
            idempotency_key=key,
            service_id=service_id,
            reason=reason,
            batch_key=batch_key,
            refund_of=refund_of,
        )
        state.ledger.append(entry)
        workflow.logger.info(
            "credit moved",
            extra={"customer_id": state.customer_id, "kind": kind.value, "amount": str(amount)},
        )
        return entry

    def _moved(self, count: int) -> None:
        self.moved += count
        self._show()

    def _show(self) -> None:
        state = self.state
        workflow.set_current_details(
            f"balance {state.balance} {state.currency} · {state.sequence} movements · run {state.runs}"
        )
