// TODO(helper): the layers ops.
export {};
