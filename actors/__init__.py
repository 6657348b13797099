"""The concurrent system: one trio task per actor, the message fabric and the
scheduler. The only layer that awaits.
"""

from ._fabric import Actor as Actor
from ._fabric import Divergence as Divergence
from ._fabric import Envelope as Envelope
from ._fabric import Fabric as Fabric
from ._fabric import FabricStatistics as FabricStatistics
from ._fabric import Recorder as Recorder
from ._fabric import RunLimitReached as RunLimitReached
from ._fabric import Strategy as Strategy
from ._strategy import PctStrategy as PctStrategy
from ._strategy import RandomStrategy as RandomStrategy
from ._strategy import ReplayStrategy as ReplayStrategy
