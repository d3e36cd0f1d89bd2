"""CouponWorkflow: one discount code, its rules and every redemption of it (`coupon-<CODE>`).

`redeem` is a synchronous update handler: one redemption is decided and counted before the next
starts, so a limited-use coupon is redeemed exactly as often as allowed even when many orders
race for the last use. A service that asks again (a retried activity) gets its first answer and
is not counted twice. Refusals name the rule (`policy.commerce.check_coupon`) and count nothing.

The workflow lives until ops retire the coupon; a time-limited coupon keeps answering "expired"
after its window so customers learn why. It continues as new when the server suggests it.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from policy.commerce import CouponDecision, CouponRule, check_coupon
    from workflows.offers_models import (
        CouponInput,
        CouponRedemption,
        CouponState,
        CouponStatus,
        RedeemAnswer,
        RedeemRequest,
        RetireCoupon,
    )


@workflow.defn
class CouponWorkflow:
    @workflow.init
    def __init__(self, start: CouponInput) -> None:
        if start.state is not None:
            self.state = start.state
        elif start.coupon is not None:
            self.state = CouponState(coupon=start.coupon)
        else:
            raise ValueError("a coupon workflow needs a coupon or a state")

    @workflow.run
    async def run(self, start: CouponInput) -> CouponStatus:
        await workflow.wait_condition(
            lambda: self.state.retired is not None or workflow.info().is_continue_as_new_suggested()
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self.state.retired is None:
            self.state.runs += 1
            workflow.continue_as_new(CouponInput(state=self.state))
        return self.details()

    @workflow.update
    def redeem(self, request: RedeemRequest) -> RedeemAnswer:
        state = self.state
        coupon = state.coupon
        earlier = next((r for r in state.redemptions if r.service_id == request.service_id), None)
        if earlier is not None:
            return RedeemAnswer(
                decision=CouponDecision(
                    accepted=True,
                    reason=f"coupon {coupon.code}: already redeemed by this service",
                    discount=earlier.discount,
                    price_after=earlier.price - earlier.discount,
                ),
                uses=len(state.redemptions),
                repeated=True,
            )
        if state.retired is not None:
            decision = CouponDecision(
                accepted=False,
                rule_refused=CouponRule.EXPIRED,
                reason=f"coupon {coupon.code}: withdrawn ({state.retired})",
            )
        else:
            decision = check_coupon(
                coupon,
                customer_is_new=request.customer_is_new,
                is_first_period=request.is_first_period,
                other_coupon_applied=request.other_coupon_applied,
                purpose=request.purpose,
                product_kind=request.product_kind,
                product=request.product,
                period=request.period,
                price=request.price,
                order_time=workflow.now(),
                uses_so_far=len(state.redemptions),
                rules=request.rules,
                order_paid=request.order_paid,
            )
        if decision.accepted:
            state.redemptions.append(
                CouponRedemption(
                    service_id=request.service_id,
                    customer_id=request.customer_id,
                    at=workflow.now(),
                    price=request.price,
                    discount=decision.discount,
                )
            )
        else:
            state.refusals += 1
        workflow.logger.info(
            "coupon redemption decided",
            extra={"code": coupon.code, "service_id": request.service_id, "accepted": decision.accepted},
        )
        return RedeemAnswer(decision=decision, uses=len(state.redemptions))

    @redeem.validator
    def _validate_redeem(self, request: RedeemRequest) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")

    @workflow.update
    def retire(self, request: RetireCoupon) -> CouponStatus:
        """Ops withdraw the coupon: later orders are refused; redemptions so far stand."""
        self.state.retired = request.reason
        return self.details()

    @retire.validator
    def _validate_retire(self, request: RetireCoupon) -> None:
        if request is None:
            raise ValueError("the request is missing (got null)")
        if self.state.retired is not None:
            raise ValueError(f"coupon {self.state.coupon.code} is already withdrawn: {self.state.retired}")

    @workflow.query
    def details(self) -> CouponStatus:
        state = self.state
        uses = len(state.redemptions)
        limit = state.coupon.max_uses
        return CouponStatus(
            coupon=state.coupon,
            uses=uses,
            remaining=None if limit is None else max(0, limit - uses),
            refusals=state.refusals,
            retired=state.retired,
            redemptions=state.redemptions[-200:],
        )
