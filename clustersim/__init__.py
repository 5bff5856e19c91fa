"""clustersim: a simulated GPU cluster that speaks the Kubernetes API and serves an ECR registry.

from clustersim import ClusterSim, presets
sim = ClusterSim(preset="small", seed=1).start()
...
sim.stop()
"""

from clustersim import presets
from clustersim.sim import ClusterSim

__all__ = ["ClusterSim", "presets"]
