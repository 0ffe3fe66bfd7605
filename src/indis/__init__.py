"""indis: instance-aware discretizations for few-step diffusion sampling."""
