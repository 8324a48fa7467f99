"""Run gnurouter under twistd:  twistd -n -y examples/gnurouter.tac

The router is an ordinary Twisted Service, so it composes with any other
service in the same application (a web UI, a manhole, ...).
"""

from twisted.application import service

from gnurouter.config import RouterConfig
from gnurouter.edge.service import RouterService

application = service.Application("gnurouter")
router = RouterService(RouterConfig(listen=("127.0.0.1", 6346), control_listen=("127.0.0.1", 6347)))
router.setServiceParent(application)
