// Rejects Pods whose containers (init and ephemeral ones included) run an image without a
// tag or digest, tagged `latest`, or from outside the settings' `allowedRegistries`; the way
// Kubewarden's JavaScript policies are written: parse the request, check, answer.
function parseSettings(settings) {
  const registries = settings.allowedRegistries ?? [];
  if (!Array.isArray(registries) || registries.some((r) => typeof r !== "string")) {
    throw new Error("allowedRegistries must be a list of strings");
  }
  return { registries };
}

function imageProblem(image, registries) {
  const name = image.split("@")[0];
  const lastSlash = name.lastIndexOf("/");
  const tagAt = name.indexOf(":", lastSlash + 1);
  const tag = tagAt < 0 ? undefined : name.slice(tagAt + 1);
  if (!image.includes("@") && (tag === undefined || tag === "latest")) {
    return `image ${image} has no pinned tag`;
  }
  if (registries.length > 0 && !registries.some((r) => image.startsWith(r))) {
    return `image ${image} is not from an allowed registry (${registries.join(", ")})`;
  }
  return undefined;
}

function validate(input) {
  const { request, settings } = JSON.parse(input);
  const { registries } = parseSettings(settings ?? {});
  const spec = request.object?.spec ?? {};
  const containers = [
    ...(spec.containers ?? []),
    ...(spec.initContainers ?? []),
    ...(spec.ephemeralContainers ?? []),
  ];
  const problems = containers
    .map((c) => imageProblem(c.image ?? "", registries))
    .filter((p) => p !== undefined);
  if (problems.length > 0) {
    return JSON.stringify({ accepted: false, message: problems.join("; ") });
  }
  return JSON.stringify({ accepted: true });
}

function validateSettings(input) {
  try {
    parseSettings(JSON.parse(input));
    return JSON.stringify({ valid: true });
  } catch (e) {
    return JSON.stringify({ valid: false, message: e.message });
  }
}
