# The demo's control: plain distillation. The TST run's student, teacher, distillation
# losses, optimizer and schedule, without the augmenter: the student learns from the
# clean images only (student_views=('clean',)), and no augment phase runs. The same 8
# loaded images per step as the other runs.
_base_ = './tst_retinanet_r18_r18-narrow_digits.py'

model = dict(student_views=('clean', ))
train_cfg = dict(augment_iters=[])
custom_hooks = []  # no policy to log: the augmenter is not used
