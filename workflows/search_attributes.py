"""Custom search attributes ops filter services by in the Web UI and `hostlife service list`."""

from temporalio.common import SearchAttributeKey

SERVICE_STATE = SearchAttributeKey.for_keyword("HostlifeServiceState")
PRODUCT = SearchAttributeKey.for_keyword("HostlifeProduct")
PROFILE = SearchAttributeKey.for_keyword("HostlifeProfile")
CUSTOMER_ID = SearchAttributeKey.for_keyword("HostlifeCustomerId")
SERVICE_ID = SearchAttributeKey.for_keyword("HostlifeServiceId")
EXPIRES_ON = SearchAttributeKey.for_datetime("HostlifeExpiresOn")
VARIABLE_SYMBOLS = SearchAttributeKey.for_keyword_list("HostlifeVariableSymbols")
NEEDS_ATTENTION = SearchAttributeKey.for_keyword("HostlifeAttention")

ALL = (
    SERVICE_STATE,
    PRODUCT,
    PROFILE,
    CUSTOMER_ID,
    SERVICE_ID,
    EXPIRES_ON,
    VARIABLE_SYMBOLS,
    NEEDS_ATTENTION,
)
