// TODO(helper): the optim ops.
export {};
