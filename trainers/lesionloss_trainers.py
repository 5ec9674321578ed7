"""Re-exports the trainers of nnunet_lesionloss so that nnU-Net finds them through nnUNet_extTrainer.

Nothing is defined here: nnU-Net drops the modules it imports from this folder out of sys.modules
after its lookup, and only classes defined inside the installed package can still be pickled.
"""

from nnunet_lesionloss.training.variants import *  # noqa: F401,F403
from nnunet_lesionloss.training.variants import __all__  # noqa: F401
