"""Commerce activities: redeeming a coupon at its `CouponWorkflow`, resolving a profile's rules.

    ApplicationError type="CouponStoreRefused"   (not retried: the coupon workflow refused the
                                                  request itself, e.g. a malformed one)

A workflow cannot send an update to another workflow, so the subscription redeems through this
activity, which sends the `redeem` update with a Temporal client. A coupon nobody created is not
an error but a refusal (`CouponRule.UNKNOWN`), so the customer learns which rule refused it.
The update id is left to the client: the coupon workflow remembers which services redeemed it
and answers a repeat with the first answer, counting it once.

`resolve_commerce_rules` runs as a local activity: the subscription records the profile's rules
in its history once, so a later edit of `policy/commerce.toml` never makes a replay decide
differently.
"""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from policy.commerce import CommerceRules, CouponDecision, CouponRule, commerce_rules
from workflows.coupon import CouponWorkflow
from workflows.offers_models import RedeemAnswer, RedeemRequest, coupon_workflow_id


class RedeemCouponInput(BaseModel):
    code: str
    request: RedeemRequest


class ResolveRulesInput(BaseModel):
    profile: str


class OfferActivities:
    def __init__(self, client: Client) -> None:
        self.client = client

    @activity.defn
    async def redeem_coupon(self, request: RedeemCouponInput) -> RedeemAnswer:
        handle = self.client.get_workflow_handle_for(CouponWorkflow.run, coupon_workflow_id(request.code))
        try:
            answer = await handle.execute_update(CouponWorkflow.redeem, request.request)
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                return RedeemAnswer(
                    decision=CouponDecision(
                        accepted=False,
                        rule_refused=CouponRule.UNKNOWN,
                        reason=f"coupon {request.code}: no such coupon",
                    ),
                    uses=0,
                )
            raise
        except WorkflowUpdateFailedError as exc:
            reason = str(getattr(exc.cause, "message", exc.cause))
            raise ApplicationError(
                f"coupon {request.code} refused the request: {reason}",
                type="CouponStoreRefused",
                non_retryable=True,
            ) from exc
        activity.logger.info(
            "coupon redemption answered",
            extra={"code": request.code, "accepted": answer.decision.accepted, "uses": answer.uses},
        )
        return answer


@activity.defn
def resolve_commerce_rules(request: ResolveRulesInput) -> CommerceRules:
    return commerce_rules(request.profile)
