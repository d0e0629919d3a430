# The demo's TST run: the narrow student distilled from the trained demo teacher
# (`make demo` trains the teacher first and passes its checkpoint as teacher_ckpt).
_base_ = './retinanet_r18-narrow_digits.py'

teacher_ckpt = 'work_dirs/demo/teacher/iter_900.pth'
model = dict(
    _delete_=True,
    type='TSTDistiller',
    student={{_base_.model}},
    teacher='{{fileDirname}}/retinanet_r18_digits.py',
    teacher_ckpt=teacher_ckpt,
    augmenter=dict(type='TSTAugmenter', num_ops=4, temperature=0.05),
    distill_losses=dict(
        loss_kd_cls=dict(type='BinaryKLDivergence', student='bbox_head.retina_cls',
                         teacher='bbox_head.retina_cls', loss_weight=1.0),
        loss_mimic_fpn=dict(type='FeatureMimic', student='neck', teacher='neck',
                            student_channels=32, teacher_channels=64, loss_weight=1.0)))
model_wrapper_cfg = dict(type='TSTDistributedDataParallel')

# Augment phases as the reference places them in its schedule (epochs 6 and 12 of 24),
# here in iterations, plus one at the start.
train_cfg = dict(_delete_=True, type='TSTIterBasedTrainLoop', max_iters={{_base_.max_iters}},
                 val_interval={{_base_.max_iters}}, augment_iters=[0, 75, 150],
                 augment_steps=10)
# The same 8 loaded images per step as the student-alone run; the student sees each
# twice ([x_aug ; x]).
optim_wrapper = dict(
    _delete_=True,
    constructor='TSTOptimWrapperConstructor',
    student={{_base_.optim_wrapper}},
    augmenter=dict(type='OptimWrapper',
                   optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                   clip_grad=dict(max_norm=20)))
param_scheduler = dict(_delete_=True, student={{_base_.param_scheduler}}, augmenter=[])
