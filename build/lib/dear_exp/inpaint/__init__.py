"""Making the diagnostic inpaint set (`task=make_inpaint`, method.md step 1).

For each real image: a seeded rectangle mask (`masks`), a diffusers inpainting pipeline loaded from
a hub id or a local folder (`pipeline`), a composite through the blurred mask (`composite`), and
`{stem}_inpaint.png` + `{stem}_mask.png` written atomically and resumably (`writer`), sharded over
devices by Lightning's predict loop (`lightning`). Nothing here imports diffusers until a pipeline
is loaded.
"""
